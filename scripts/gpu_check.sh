#!/usr/bin/env bash
# The GPU check, for the day a machine with an NVIDIA GPU is at hand (under 8 minutes; needs no network):
#     bash scripts/gpu_check.sh
# The transformers backend in bf16 (where the card has it), in fp16 (as a T4/V100 would run: the card is made to
# answer "no native bf16"), and 4-bit NF4 (where bitsandbytes imports), on a small random Llama-architecture model
# built from a config (~110M parameters, byte-level tokenizer), each through train -> evaluate -> export, printing
# training tokens/s and peak GPU memory. Run folders go to $GPU_CHECK_DIR (default: a temporary folder).
#
# NEVER RUN ON A GPU: written without one (docs/gpu.md says what ran where). Its logic ran on the CPU only, with
# tiny sizes: GPU_CHECK_ALLOW_CPU=1 bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export GPU_CHECK_DIR=${GPU_CHECK_DIR:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 470 "$PY" - <<'EOF'
import json, os, sys, time
from pathlib import Path

import torch

sys.path.insert(0, os.getcwd())
CPU = os.environ.get("GPU_CHECK_ALLOW_CPU") == "1"
if not torch.cuda.is_available() and not CPU:
    sys.exit("gpu_check: torch sees no CUDA GPU (set GPU_CHECK_ALLOW_CPU=1 for a tiny dry run on the CPU)")

from transformers import LlamaConfig, LlamaForCausalLM

from apps.translator.evaluate import evaluate
from apps.translator.task import TASK
from shared import export, models, runs
from shared.config import resolve
from shared.train import train
from tests.conftest import make_tokenizer

ROOT = Path(os.environ["GPU_CHECK_DIR"])
SIZE = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if CPU else dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                         num_key_value_heads=4))
STEPS, BATCH, EVAL_ROWS = (2, 4, 4) if CPU else (40, 16, 64)


def model_dir() -> Path:
    out = ROOT / "model"
    if not (out / "config.json").is_file():
        tok = make_tokenizer()
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, **SIZE)
        LlamaForCausalLM(cfg).save_pretrained(out)
        tok.save_pretrained(out)
    return out


def one(mode: str) -> dict:
    """train -> evaluate -> export in one precision mode; returns the figures."""
    native = models.cuda_bf16_native
    if mode == "fp16":  # this card answers as a T4 would: no bf16 in hardware
        models.cuda_bf16_native = lambda: False
    try:
        run_dir = ROOT / f"run-{mode}"
        cfg = resolve(cli={"model.name": str(model_dir()), "model.chat_template": "chatml", "model.max_length": 384,
                           "model.quantization": "4bit" if mode == "4bit" else "none",
                           "data.train": "data/translator/train.jsonl", "data.valid": "data/translator/valid.jsonl",
                           "data.test": "data/translator/test.jsonl", "data.limit": STEPS * BATCH,
                           "train.max_steps": STEPS, "train.batch_size": BATCH, "train.logging_steps": 10,
                           "train.save_steps": 10_000, "lora.target_modules": ["all-linear"],
                           "generate.max_new_tokens": 48, "output.dir": str(run_dir)})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        train(TASK, cfg, run_dir, f"gpu_check {mode}")
        train_peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        rec = runs.Run.load(run_dir).record
        per_example = rec.train["dataset_tokens"] / max(rec.data.get("rows_used", 1), 1)
        t1 = time.time()
        metrics = evaluate(str(run_dir), cfg.data.test, limit=EVAL_ROWS, with_base=False)
        t2 = time.time()
        export.main(["--run", str(run_dir), "--merged", str(ROOT / f"merged-{mode}"), "--overwrite"])
        exported = json.loads((ROOT / f"merged-{mode}" / "export.json").read_text())
        return {"mode": mode, "weights": str(models.weight_dtype(cfg.model, True)).replace("torch.", ""),
                "trainer": "bf16" if models.mixed_precision("auto")[0] else "fp16" if models.mixed_precision("auto")[1]
                else "fp32", "train_tokens_per_s": round(rec.train["examples_per_s"] * per_example),
                "train_peak_gib": round(train_peak, 2), "train_s": rec.timings.get("train_s"),
                "eval_s": round(t2 - t1, 1), "eval_chrf": metrics["finetuned"]["chrf"],
                "export_s": round(time.time() - t2, 1), "merged_dtype": exported["merged_dtype"],
                "total_s": round(time.time() - t0, 1)}
    finally:
        models.cuda_bf16_native = native


def bnb_ok() -> bool:
    try:
        import bitsandbytes  # noqa: F401
        return True
    except Exception as e:  # noqa: BLE001
        print(f"4-bit skipped: bitsandbytes does not import ({e.__class__.__name__})")
        return False


modes = (["bf16"] if (CPU or models.cuda_bf16_native()) else []) + ["fp16"] + (["4bit"] if bnb_ok() else [])
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name(0)}, compute capability {'.'.join(map(str, torch.cuda.get_device_capability(0)))}, "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
results = []
for mode in modes:
    try:
        results.append(one(mode))
    except Exception as e:  # noqa: BLE001 - report and go on with the next mode
        results.append({"mode": mode, "error": f"{e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
    print(json.dumps(results[-1]), flush=True)
print("\nmode   weights   trainer  tokens/s  peak GiB  train s  eval s  export s")
for r in results:
    if "error" in r:
        print(f"{r['mode']:<6} FAILED: {r['error']}")
    else:
        print(f"{r['mode']:<6} {r['weights']:<9} {r['trainer']:<8} {r['train_tokens_per_s']:>8} "
              f"{r['train_peak_gib']:>9} {r['train_s']:>8} {r['eval_s']:>7} {r['export_s']:>9}")
(ROOT / "gpu_check.json").write_text(json.dumps(results, indent=2))
print(f"figures in {ROOT / 'gpu_check.json'}")
sys.exit(1 if any("error" in r for r in results) else 0)
EOF
