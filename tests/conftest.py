"""Shared fixtures: a tiny byte-level tokenizer and a tiny random Llama model built from a config (no
downloads), and the real embedded Gemma 3 tokenizer for the tests marked `slow`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download from a model hub
os.environ["HF_DATASETS_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # share the cores between the workers, and their subprocesses
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _threads = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def make_tokenizer():
    """A real byte-level BPE tokenizer (256 byte tokens, no merges) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return fast


def make_tiny_model_dir(path: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory) -> Path:
    """A tiny Gemma 3 (tied embeddings, norms that return their input's dtype: the embedded model's layout)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    path = tmp_path_factory.mktemp("tiny-gemma")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=32,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    Gemma3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_model_cfg(tiny_model_dir):
    from shared.config import ModelConfig

    return ModelConfig(name=str(tiny_model_dir), chat_template="chatml", dtype="float32", max_length=256)


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The embedded Gemma 3 270M, converted once into the user cache (about a minute the first time)."""
    from shared.models import materialize

    return Path(materialize("gemma3-270m")[1])


def run(args, cwd, stdin=None, timeout=900):
    """`python -m <args>` as a user runs it, from `cwd`, with this checkout importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


# A few steps of the real cpu profile on the shipped data, one run per product, made by the real `train` command.
EMBEDDED_TRAIN = {
    "translator": ["--max-steps", "3", "--limit", "48", "--train.batch_size", "4", "--train.save_steps", "2"],
    # a validation split of 4 of the 40 rows: the shipped 180-row file costs ~90 s of forward passes on an
    # AVX2-only CPU, which no test needs
    "price_predictor": ["--max-steps", "2", "--limit", "40", "--train.batch_size", "4"],
}


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory, gemma_dir):
    """embedded_run(product, ...) -> (run folder, finished `train` process), one per product asked for: one run per
    product of the real `train` command on the embedded Gemma 3 270M, made once for the whole suite and shared by
    the slow tests that need a trained model (the commands end to end, the demos in a browser). Under pytest-xdist
    each worker has its own session: the first to ask for a product trains it under a file lock and the others
    reuse it. A worker asking for several trains first one that no other worker is training, so two workers
    train the two products side by side instead of one waiting (a waiting worker leaves its core idle). Run
    folders are written atomically, so a test may evaluate a run while another reads it."""
    from filelock import FileLock, Timeout

    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the folder that holds every worker's own
    root = root / "embedded-runs"
    root.mkdir(exist_ok=True)

    def made(product: str, wait: bool) -> tuple[Path, subprocess.CompletedProcess] | None:
        run_dir, record = root / product / "cli-run", root / f"{product}.train.json"
        try:
            with FileLock(str(root / f"{product}.lock"), timeout=-1 if wait else 0):
                if not record.is_file():
                    done = run([f"apps.{product}.train", "--profile", "cpu", *EMBEDDED_TRAIN[product],
                                "--output-dir", str(run_dir), "--train.logging_steps", "1", "--data.valid", "",
                                "--data.valid_fraction", "0.1"], cwd=ROOT)
                    record.write_text(json.dumps({"args": done.args, "returncode": done.returncode,
                                                  "stdout": done.stdout, "stderr": done.stderr}))
        except Timeout:
            return None  # another worker is training it
        return run_dir, subprocess.CompletedProcess(**json.loads(record.read_text()))

    def made_all(*products: str):
        done, pending = {}, list(products)
        while pending:
            for product in pending:
                found = made(product, wait=len(pending) == 1)
                if found:
                    done[product] = found
                    pending.remove(product)
                    break
            else:
                time.sleep(0.5)  # every one left is being trained elsewhere
        return done[products[0]] if len(products) == 1 else [done[p] for p in products]

    return made_all


@pytest.fixture(scope="session")
def gemma_tokenizer(gemma_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_dir)


def favour_tokens(model, tok, fmt, biases: dict[str, float]):
    """The model with a sharper output layer (weights x 10) that favours the first token of each text in `biases`
    ("eot" for the end-of-turn token) by its bias: short answers that end at different steps."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight * 10)
        head.bias.zero_()
        for text, bias in biases.items():
            token = tok.convert_tokens_to_ids(fmt.end_of_turn) if text == "eot" else \
                tok(text, add_special_tokens=False)["input_ids"][0]
            head.bias[token] = bias
    model.lm_head = head
    return model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


PAIRS = [("Hello.", "안녕하세요."), ("Thank you very much.", "대단히 감사합니다."),
         ("Where is the station?", "역은 어디에 있습니까?"), ("The store opens at nine.", "가게는 9시에 문을 엽니다."),
         ("Please close the door.", "문을 닫아 주십시오."), ("It is raining today.", "오늘은 비가 옵니다."),
         ("I like green tea.", "저는 녹차를 좋아합니다."), ("The battery lasts ten hours.", "배터리는 10시간 지속됩니다.")]


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS * 4])
