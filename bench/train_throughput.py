"""Training throughput: our core (shared.train) vs stock TRL SFTTrainer + PEFT, side by side.

    python -m bench.train_throughput [--rows 256] [--steps 10] [--batch-size 16] [--max-length 160]
                                     [--model gemma3-270m] [--trl-dtype float32|bfloat16]

Both sides train the same model on the same rows (the first --rows of ../shared/data/translation/dev_pairs.jsonl,
or data/translator/train.jsonl when that file is absent), rendered by the translator task into the same chat
prompt/completion text, with the same LoRA settings, learning-rate schedule, batch, max length, seed, sampler
(length-grouped) and number of optimizer steps. Each side runs in a fresh Python process
(`--side ours|trl`, started by this script), so peak memory and one-time costs do not leak between them.

  ours  shared.train: prompt and completion tokenized once, CompletionSFTTrainer with shared.loss.completion_loss
        (output layer + cross-entropy only on answer positions), frozen base held in bf16 where
        shared.models.bf16_fast(), LoRA weights fp32, bf16 autocast.
  trl   stock TRL: SFTTrainer(model=<folder>, peft_config=LoraConfig) on a prompt-completion text dataset
        (TRL's completion-only loss), bf16=True where the CPU does bf16 fast (PyTorch CPU autocast, as in the
        transformers CPU training guide), use_cpu, base weights float32 as TRL loads a model given by path
        (model_init_kwargs dtype default; --trl-dtype bfloat16 gives it bf16 weights instead),
        eos_token set to the chat format's end-of-turn token so TRL does not append a second EOS.

Measured per side, from the batches the trainer actually used: tokens (non-padding), loss-bearing tokens
(labels != -100 after the shift), the wall time of each optimizer step (on_step_begin -> on_step_end:
forward, backward, clipping, optimizer and scheduler; model load, data preparation and logging excluded).
Throughput is over steps 2..N (the first step pays one-time kernel set-up; its time is shown separately).
Peak memory is the process's ru_maxrss (model load included) and the peak during training alone (VmHWM
reset when training starts). The loss is the mean of the last 3 logged step losses (mean cross-entropy per
answer token, logged every step by the Trainer), after the same examples on both sides.

Model FLOP utilisation counts the useful work of a LoRA step, the same way for both sides: per distinct token,
4 x frozen non-embedding parameters (forward, and backward to the activations: a frozen weight needs no gradient
of its own) + 6 x LoRA parameters (forward, backward, weight gradients), plus 4 x output-layer parameters per
loss-bearing token (the logits the objective needs; the output layer is frozen). Attention-score FLOPs are left
out (sequences are short). Distinct tokens: the non-padding tokens, with the prefix every row of a batch shares
(system prompt and chat header) counted once per batch, since one computation of it serves every row (ours does
exactly that with train.share_prefix; TRL recomputes it per row, work not counted). TRL's logits at non-answer
positions are not counted either. With train.output_vocab = answers the output layer counts only the rows it
has (its softmax is over them). The count is divided by the step time and by this machine's matmul peak in the
dtype in use (best of 5 x 10 repeated 2048x2048 matmuls on all threads). The 6 x parameters x tokens rule of
full fine-tuning on every token, the shared prefix once per row, is printed too ("effective": the work a plain
step would do, per second; it can exceed 100% when the prefix is computed once).
With --output-vocab answers our loss is over the smaller vocabulary and reads lower for the same model:
compare losses with --output-vocab full.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_PAIRS = ROOT.parent / "shared" / "data" / "translation" / "dev_pairs.jsonl"
SHIPPED_PAIRS = ROOT / "data" / "translator" / "train.jsonl"
# ~5 s per step for ours and ~22 s for stock TRL at batch 16 on this 2-core CPU: 10 steps each plus model
# loads and start-up is about 5-6 minutes in all (docs/speed.md).
DEFAULT_STEPS = 10
LAST_LOGGED = 3  # final loss = mean of this many last logged step losses


def default_data() -> str:
    return str(DEV_PAIRS if DEV_PAIRS.is_file() else SHIPPED_PAIRS)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=256, help="first N rows of the data file")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per side")
    p.add_argument("--batch-size", type=int, default=16, help="examples per optimizer step (no accumulation)")
    p.add_argument("--max-length", type=int, default=160, help="longest example in tokens; longer rows are dropped")
    p.add_argument("--model", default="gemma3-270m", help="registry name or local model folder")
    p.add_argument("--chat-template", default="", help="chat family to force (for unregistered local models)")
    p.add_argument("--dtype", default="auto", help="our frozen-base dtype (auto = bf16 where the CPU is fast)")
    p.add_argument("--trl-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="stock TRL model_init_kwargs dtype (TRL's default for a model given by path is float32)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="activation checkpointing on both sides (TRL's SFTConfig default; off by default here, "
                        "as in our cpu profile): less memory, about a third more compute")
    p.add_argument("--output-vocab", choices=("full", "answers"),
                   help="our train.output_vocab (default: the cpu profile's); losses compare only with full")
    p.add_argument("--data", default=default_data(), help="translation pairs (en/ko)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--matmul-size", type=int, default=2048, help="square matmul size for the bf16 peak")
    p.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)  # internal: one side, this process
    p.add_argument("--out", help=argparse.SUPPRESS)  # internal: where the side writes its result JSON
    return p.parse_args(argv)


# ---------------------------------------------------------------- shared by both sides

def bench_config(a: argparse.Namespace):
    """The translator's cpu profile (LoRA r/alpha/dropout/targets, lr, schedule) with the benchmark's sizes."""
    from apps.translator.task import TASK
    from shared.config import resolve

    cli = {"model.name": a.model, "model.max_length": a.max_length, "model.dtype": a.dtype,
           "train.batch_size": a.batch_size, "train.grad_accum": 1, "train.max_steps": a.steps,
           "train.logging_steps": 1, "train.save_steps": 10 ** 6, "train.seed": a.seed,
           "train.group_by_length": True, "train.gradient_checkpointing": a.gradient_checkpointing,
           **({"train.output_vocab": a.output_vocab} if a.output_vocab else {}),
           "data.train": a.data}
    if a.chat_template:
        cli["model.chat_template"] = a.chat_template
    return resolve(yaml_path=TASK.config_path("cpu"), cli=cli)


def read_rows(a: argparse.Namespace):
    from apps.translator.task import TASK
    from shared.data import DataReport

    return TASK.read(a.data, DataReport(), limit=a.rows)


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM and ru_maxrss) so training's own peak shows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_mb(field: str = "VmHWM") -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def shared_prefix(input_ids, mask) -> int:
    """How many leading tokens every row of the batch has in common (the rows' real tokens, padding left out).
    Not shared.loss.shared_prefix_length, which is what our step may share (stopped before the first answer token,
    none under 8 tokens or with left padding): this counts the work any step could avoid, for both sides."""
    import torch

    rows = [ids[m.bool()] for ids, m in zip(input_ids, mask)]
    shortest = min(len(r) for r in rows)
    if shortest == 0:
        return 0
    same = torch.stack([r[:shortest] == rows[0][:shortest] for r in rows]).all(0)
    return int(same.long().cumprod(0).sum())


def distinct_tokens(step: dict) -> int:
    """A batch's non-padding tokens with its rows' shared prefix counted once."""
    return step["tokens"] - (step["rows"] - 1) * step.get("shared_prefix", 0)


def _meter():
    """A Trainer callback that times each optimizer step and keeps the logged losses; `count` sees each batch."""
    from transformers import TrainerCallback

    class Meter(TrainerCallback):
        def __init__(self):
            self.step_s, self.steps, self.losses, self._batch = [], [], [], None
            self.process_peak_before_train_mb = self.rss_at_train_start_mb = None
            self.hwm_reset = False

        def count(self, inputs) -> None:
            mask = inputs["attention_mask"] if "attention_mask" in inputs else inputs["input_ids"] != -1
            labels = inputs["labels"]
            real = inputs["input_ids"][mask.bool()]
            self._batch = {"tokens": int(mask.sum()), "loss_tokens": int((labels[:, 1:] != -100).sum()),
                           "shared_prefix": shared_prefix(inputs["input_ids"], mask),
                           "positions": int(inputs["input_ids"].numel()),
                           "rows": int(inputs["input_ids"].shape[0]),
                           "hash": hashlib.sha1(real.cpu().numpy().tobytes()).hexdigest()[:12]}

        def on_train_begin(self, args, state, control, **kw):
            self.process_peak_before_train_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.rss_at_train_start_mb = _vm_mb("VmRSS")
            self.hwm_reset = _reset_peak_rss()

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.step_s.append(time.perf_counter() - self._t0)
            self.steps.append(self._batch)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append({"step": state.global_step, "loss": float(logs["loss"])})

    return Meter()


def _metered(trainer_cls, meter):
    """The trainer class with one addition: every micro-batch is shown to the meter before the step runs."""

    class Metered(trainer_cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            meter.count(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return Metered


def _parameter_counts(peft_model) -> dict:
    """Unique parameters split into input embedding, output layer (tied or not), LoRA, and the rest."""
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    embed = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    seen, lora, body = set(), 0, 0
    for name, p in base.named_parameters():
        if id(p) in seen or p is embed or p is head:
            continue
        seen.add(id(p))
        if "lora_" in name:
            lora += p.numel()
        else:
            body += p.numel()
    return {"non_embedding": body, "lora": lora, "output_layer": head.numel(), "output_rows": head.shape[0],
            "embedding": embed.numel(),
            "output_layer_tied": head.data_ptr() == embed.data_ptr()}


def stock_lora_config(cfg):
    """The LoraConfig a user of stock PEFT writes: the same rank, alpha, dropout, target names and scaling."""
    from peft import LoraConfig

    from shared import models

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias="none",
                      target_modules=cfg.lora.target_modules or models.default_target_modules(cfg.model),
                      use_rslora=cfg.lora.use_rslora, task_type="CAUSAL_LM")


def _side_result(side: str, trainer, meter, load_s: float, weight_dtype) -> dict:
    return {"side": side, "steps": meter.steps, "step_s": meter.step_s, "losses": meter.losses,
            "load_s": round(load_s, 1), "params": _parameter_counts(trainer.model),
            "bf16_autocast": bool(trainer.args.bf16), "weight_dtype": str(weight_dtype).replace("torch.", ""),
            # Resetting the high-water mark at train start also resets ru_maxrss: the process peak is the larger
            # of the peak before training (model load) and the peak since.
            "peak_rss_mb": max(meter.process_peak_before_train_mb or 0.0,
                               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "train_peak_rss_mb": _vm_mb("VmHWM") if meter.hwm_reset else None,
            "rss_at_train_start_mb": meter.rss_at_train_start_mb,
            "peak_before_train_mb": meter.process_peak_before_train_mb,
            "threads": __import__("torch").get_num_threads()}


# ---------------------------------------------------------------- the two sides

def run_ours(a: argparse.Namespace, work: Path) -> dict:
    """The project's training path: shared.models.load, shared.train.build_dataset, CompletionSFTTrainer."""
    from shared.models import one_run_process

    one_run_process()  # this side's process is its own, as the train command's is (before its config's checks)
    cfg = bench_config(a)
    from transformers import set_seed
    from transformers.trainer_utils import SaveStrategy

    from apps.translator.task import TASK
    from shared import models
    from shared import train as core
    from shared.data import DataReport
    from shared.embeddings import compute_dtype

    t0 = time.perf_counter()
    model, tokenizer, fmt = models.load(cfg.model, training=True)
    dataset = core.build_dataset(read_rows(a), TASK, tokenizer, fmt, cfg.model.max_length, DataReport())
    args = core.sft_config(cfg, work, has_eval=False)
    args.save_strategy = SaveStrategy.NO  # no checkpoint writes inside or after the timed steps
    args.disable_tqdm = True
    meter = _meter()
    set_seed(cfg.train.seed)  # the LoRA init happens in the trainer's constructor, before Trainer seeds
    trainer = _metered(core._trainer_class(), meter)(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=core.lora_config(cfg, model), callbacks=[meter])
    output_ids = core.output_vocabulary(cfg, tokenizer, fmt, dataset, None)
    core.loss_settings(trainer, cfg, model, output_ids)
    load_s = time.perf_counter() - t0
    trainer.train()
    # The dtype the weights compute in: the first parameter is the token embedding, which a float32 run keeps
    # in bf16 (shared/embeddings.py).
    result = _side_result("ours", trainer, meter, load_s, compute_dtype(next(model.parameters())))
    if output_ids is not None:  # the output layer's useful work is over the rows it uses
        result["params"]["output_rows_used"] = len(output_ids)
    return result


def run_trl(a: argparse.Namespace, work: Path) -> dict:
    """Stock TRL + PEFT: the model folder by path, a prompt-completion text dataset, TRL's own loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from apps.translator.task import TASK
    from shared import models
    from shared.train import tokenize_pair, use_bf16

    cfg = bench_config(a)
    t0 = time.perf_counter()
    _, folder = models.materialize(cfg.model.name)  # the cached safetensors folder (no conversion when cached)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fmt = models.chat_format_for(cfg.model, tokenizer)
    # The same rows as ours: ours drops rows over max_length (never truncates), so drop the same ones here.
    pairs = [TASK.prompt_completion(r, fmt) for r in read_rows(a)]
    pairs = [(p, c) for p, c in pairs if len(tokenize_pair(tokenizer, p, c)[0]) <= cfg.model.max_length]
    # TRL tokenizes plain text with the tokenizer's special tokens, so a tokenizer that adds BOS would give
    # "<bos><bos>..." with our rendered prompt: leave the rendered BOS out here, so both sides train on the
    # same token sequences (the table's batch hashes check it).
    if fmt.bos and tokenizer.bos_token_id is not None and \
            tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]:
        pairs = [(p.removeprefix(fmt.bos), c) for p, c in pairs]
    dataset = Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})
    t = cfg.train
    args = SFTConfig(
        output_dir=str(work), max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=1, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, optim=t.optim, max_grad_norm=t.max_grad_norm,
        seed=t.seed, data_seed=t.seed, bf16=use_bf16(cfg), use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length", completion_only_loss=True, max_length=cfg.model.max_length,
        # SFTConfig turns activation checkpointing on by default; ours runs without it (on a CPU it costs a
        # third more compute), so both sides get the same setting: the faster one, off.
        gradient_checkpointing=t.gradient_checkpointing,
        eos_token=fmt.end_of_turn, model_init_kwargs={"dtype": a.trl_dtype}, logging_steps=1,
        save_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True)
    meter = _meter()
    set_seed(t.seed)
    trainer = _metered(SFTTrainer, meter)(model=folder, args=args, train_dataset=dataset,
                                          processing_class=tokenizer, peft_config=stock_lora_config(cfg),
                                          callbacks=[meter])
    load_s = time.perf_counter() - t0
    trainer.train()
    return _side_result("trl", trainer, meter, load_s, next(trainer.model.get_base_model().parameters()).dtype)


# ---------------------------------------------------------------- the parent process

def matmul_peak_gflops(n: int = 2048, reps: int = 10, trials: int = 5) -> tuple[float, str]:
    """Best-of-`trials` FLOP/s of `reps` back-to-back n x n matmuls on all threads, in bf16 where fast."""
    import torch

    from shared.models import bf16_fast

    dtype = torch.bfloat16 if bf16_fast() else torch.float32
    x, y = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(3):
        torch.mm(x, y, out=out)
    best = float("inf")
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(x, y, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 * reps / best / 1e9, str(dtype).replace("torch.", "")


def summarize(r: dict, peak_gflops: float) -> dict:
    """Throughput over steps 2..N (all steps when there is only one), loss, memory and MFU of one side."""
    steps, times = r["steps"], r["step_s"]
    window = slice(1, None) if len(times) > 1 else slice(None)
    w_steps, w_time = steps[window], sum(times[window])
    tokens = sum(s["tokens"] for s in w_steps)
    loss_tokens = sum(s["loss_tokens"] for s in w_steps)
    p = r["params"]
    rows = p.get("output_rows")  # the share of the output layer's rows the loss uses (all without a vocabulary)
    head = p["output_layer"] * (p.get("output_rows_used", rows) / rows if rows else 1)
    distinct = sum(map(distinct_tokens, w_steps))
    flops = (4 * p["non_embedding"] + 6 * p["lora"]) * distinct + 4 * head * loss_tokens
    # the rule of full fine-tuning on every token, shared prefix included: the work a plain step would do
    flops_6n = 6 * (p["non_embedding"] + p["lora"]) * tokens + 6 * head * loss_tokens
    last = [x["loss"] for x in r["losses"][-LAST_LOGGED:]]
    return {"timed_steps": len(w_steps), "timed_s": w_time, "first_step_s": times[0] if times else None,
            "step_s": w_time / max(len(w_steps), 1),
            "examples": sum(s["rows"] for s in steps), "tokens_all_steps": sum(s["tokens"] for s in steps),
            "loss_tokens_all_steps": sum(s["loss_tokens"] for s in steps),
            "distinct_tokens_all_steps": sum(map(distinct_tokens, steps)),
            "positions_all_steps": sum(s["positions"] for s in steps),
            "tokens_per_s": tokens / w_time if w_time else 0.0, "loss_tokens_per_s": loss_tokens / w_time if w_time else 0.0,
            "gflops_per_s": flops / w_time / 1e9 if w_time else 0.0,
            "mfu": flops / w_time / 1e9 / peak_gflops if w_time and peak_gflops else 0.0,
            "mfu_6n": flops_6n / w_time / 1e9 / peak_gflops if w_time and peak_gflops else 0.0,
            "final_loss": sum(last) / len(last) if last else float("nan"),
            "first_loss": r["losses"][0]["loss"] if r["losses"] else float("nan"),
            "peak_rss_mb": r["peak_rss_mb"], "train_peak_rss_mb": r["train_peak_rss_mb"], "load_s": r["load_s"],
            "rss_at_train_start_mb": r.get("rss_at_train_start_mb")}


def run_side_subprocess(side: str, argv: list[str], work: Path) -> dict:
    out = work / f"{side}.json"
    cmd = [sys.executable, "-m", "bench.train_throughput", *argv, "--side", side, "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    print(f"[bench] {side}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"[bench] the {side} side failed (exit {proc.returncode}); its output is above")
    result = json.loads(out.read_text())
    result["process_s"] = round(time.perf_counter() - t0, 1)
    return result


def table(s: dict[str, dict], raw: dict[str, dict], peak: float, peak_dtype: str, same_batches: bool) -> str:
    def row(label, key, fmt="{:,.1f}"):
        vals = [s[k][key] for k in ("ours", "trl")]
        cells = [("-" if v is None else fmt.format(v)) for v in vals]
        ratio = f"{vals[1] / vals[0]:.2f}x" if key in ("step_s", "peak_rss_mb", "train_peak_rss_mb") and all(vals) \
            else (f"{vals[0] / vals[1]:.2f}x" if key in ("tokens_per_s", "loss_tokens_per_s", "mfu", "mfu_6n") and vals[1] else "")
        return f"{label:<38} {cells[0]:>14} {cells[1]:>14} {ratio:>9}"

    o, t = raw["ours"], raw["trl"]
    lines = [f"{'':<38} {'ours':>14} {'stock TRL':>14} {'ours gain':>9}",
             f"{'weights / bf16 autocast':<38} {o['weight_dtype'] + ' / ' + str(o['bf16_autocast']):>14} "
             f"{t['weight_dtype'] + ' / ' + str(t['bf16_autocast']):>14}",
             row("optimizer steps (timed: 2..N)", "timed_steps", "{:d}"),
             row("examples seen", "examples", "{:d}"),
             row("tokens, all steps (non-pad)", "tokens_all_steps", "{:,d}"),
             row("loss-bearing tokens, all steps", "loss_tokens_all_steps", "{:,d}"),
             row("distinct tokens (shared prefix once)", "distinct_tokens_all_steps", "{:,d}"),
             row("padded positions, all steps", "positions_all_steps", "{:,d}"),
             row("first step s", "first_step_s", "{:.2f}"),
             row("step s (mean of timed)", "step_s", "{:.2f}"),
             row("tokens/s (all)", "tokens_per_s"),
             row("tokens/s (loss-bearing)", "loss_tokens_per_s"),
             row("model GFLOP/s", "gflops_per_s"),
             row(f"MFU (of {peak:,.0f} GFLOP/s {peak_dtype} peak)", "mfu", "{:.1%}"),
             row("MFU by 6 x params x all tokens (effective)", "mfu_6n", "{:.1%}"),
             row("peak RSS MB (process)", "peak_rss_mb", "{:,.0f}"),
             row("RSS MB when training starts", "rss_at_train_start_mb", "{:,.0f}"),
             row("peak RSS MB (during training)", "train_peak_rss_mb", "{:,.0f}"),
             row(f"loss (mean of last {LAST_LOGGED} steps)", "final_loss", "{:.4f}"),
             row("loss at step 1", "first_loss", "{:.4f}"),
             row("model load + setup s", "load_s", "{:.1f}"),
             f"same batches on both sides (token hashes): {'yes' if same_batches else 'NO'}"]
    p = o["params"]
    used = p.get("output_rows_used", p.get("output_rows"))
    lines.append(f"FLOPs/step = (4 x {p['non_embedding']:,} frozen non-embedding + 6 x {p['lora']:,} LoRA) x "
                 f"distinct tokens (the batch's shared prefix once) + 4 x {p['output_layer']:,} output layer x "
                 "loss-bearing tokens"
                 + (f" (ours: x {used:,}/{p['output_rows']:,} rows of its output vocabulary; its loss is over "
                    "them, not comparable)" if used != p.get("output_rows") else " (same count for both sides)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.side:  # one side, in this (fresh) process
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        with tempfile.TemporaryDirectory(prefix=f"bench-{a.side}-") as work:
            result = (run_ours if a.side == "ours" else run_trl)(a, Path(work))
        Path(a.out).write_text(json.dumps(result))
        return None

    peak, peak_dtype = matmul_peak_gflops(a.matmul_size)
    print(f"[bench] {peak_dtype} matmul peak: {peak:,.0f} GFLOP/s ({a.matmul_size}x{a.matmul_size}, best of 5)",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        raw = {side: run_side_subprocess(side, argv, Path(work)) for side in ("ours", "trl")}
    s = {side: summarize(r, peak) for side, r in raw.items()}
    same = [x["hash"] for x in raw["ours"]["steps"]] == [x["hash"] for x in raw["trl"]["steps"]]
    print(f"\nTraining throughput: {a.model}, first {a.rows} rows of {a.data}, {a.steps} steps x batch "
          f"{a.batch_size}, max_length {a.max_length}, {raw['ours']['threads']} threads")
    print(table(s, raw, peak, peak_dtype, same))
    o, t = s["ours"], s["trl"]
    summary = {"ours_tokens_per_s": round(o["tokens_per_s"], 1), "trl_tokens_per_s": round(t["tokens_per_s"], 1),
               "speedup": round(o["tokens_per_s"] / t["tokens_per_s"], 2) if t["tokens_per_s"] else None,
               "ours_loss_tokens_per_s": round(o["loss_tokens_per_s"], 1),
               "trl_loss_tokens_per_s": round(t["loss_tokens_per_s"], 1),
               "ours_peak_rss_mb": round(o["peak_rss_mb"]), "trl_peak_rss_mb": round(t["peak_rss_mb"]),
               "memory_ratio": round(o["peak_rss_mb"] / t["peak_rss_mb"], 2),
               "ours_train_peak_rss_mb": o["train_peak_rss_mb"] and round(o["train_peak_rss_mb"]),
               "trl_train_peak_rss_mb": t["train_peak_rss_mb"] and round(t["train_peak_rss_mb"]),
               "ours_final_loss": round(o["final_loss"], 4), "trl_final_loss": round(t["final_loss"], 4),
               "ours_step_s": round(o["step_s"], 3), "trl_step_s": round(t["step_s"], 3),
               "mfu_ours": round(o["mfu"], 4), "mfu_trl": round(t["mfu"], 4),
               "mfu_6n_ours": round(o["mfu_6n"], 4), "mfu_6n_trl": round(t["mfu_6n"], 4),
               "matmul_peak_gflops": round(peak, 1), "matmul_peak_dtype": peak_dtype,
               "steps": a.steps, "batch_size": a.batch_size, "rows": a.rows, "max_length": a.max_length,
               "examples": o["examples"], "same_batches": same, "trl_dtype": a.trl_dtype, "model": a.model,
               "gradient_checkpointing": a.gradient_checkpointing}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
