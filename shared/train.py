"""Supervised fine-tuning with TRL's SFTTrainer and a PEFT LoRA adapter, writing one run folder.

Flow: read + validate data -> tokenize once (prompt and completion separately, so the loss mask is exact)
-> drop rows over max_length (counted) -> SFTTrainer(peft_config=LoraConfig) with completion-only loss
-> checkpoints every save_steps (resumable) -> adapter/ written atomically -> run.json status "completed".
"""
from __future__ import annotations

import math
import shutil
import signal
import sys
import time
from pathlib import Path

import torch

from . import data as data_mod
from . import models, runs
from .config import ConfigError, RunConfig, save_yaml
from .loss import completion_loss
from .task import Task


def tokenize_pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """input_ids and completion_mask (1 = loss) for one example; special tokens come from the rendered text."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p + c, [0] * len(p) + [1] * len(c)


def prefix_is_stable(tokenizer, prompt: str, completion: str, prompt_ids: list[int] | None = None) -> bool:
    """True when tokens(prompt) is an exact prefix of tokens(prompt + completion): no merge across the boundary,
    so what the model sees at inference (the prompt alone) matches what it was trained on."""
    p = prompt_ids if prompt_ids is not None else tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    return full[: len(p)] == p


def build_dataset(rows, task: Task, tokenizer, fmt, max_length: int, report: data_mod.DataReport):
    """Tokenize every row once; rows longer than max_length are dropped and counted, never truncated
    (a truncated answer would teach the model to stop mid-sentence)."""
    from datasets import Dataset

    ids, masks, lengths = [], [], []
    for row in rows:
        prompt, completion = task.prompt_completion(row, fmt)
        input_ids, mask = tokenize_pair(tokenizer, prompt, completion)
        prompt_ids = input_ids[: len(mask) - sum(mask)]
        if task.require_stable_prefix and not prefix_is_stable(tokenizer, prompt, completion, prompt_ids):
            raise ConfigError(
                f"{row.file}, line {row.line}: the tokenizer ({type(tokenizer).__name__}, "
                f"{getattr(tokenizer, 'name_or_path', '?')}) merges the end of the prompt {prompt[-12:]!r} with "
                f"the answer {completion!r}, so the loss mask would not match what the model sees at inference. "
                "Training refused: change the prompt's last characters or use another tokenizer.")
        if len(input_ids) > max_length:
            report.drop(f"longer than max_length={max_length} tokens")
            continue
        ids.append(input_ids)
        masks.append(mask)
        lengths.append(len(input_ids))
    report.rows_used += len(ids)
    report.token_lengths = data_mod.percentiles(lengths)
    return Dataset.from_dict({"input_ids": ids, "completion_mask": masks})


def read_splits(cfg: RunConfig, task: Task, report: data_mod.DataReport):
    """Read and validate train/valid rows. Runs before the model loads, so a bad row fails in seconds."""
    train_rows = task.read(cfg.data.train, report, limit=cfg.data.limit, drop_duplicates=cfg.data.drop_duplicates)
    if cfg.data.valid:
        valid_rows = task.read(cfg.data.valid, data_mod.DataReport(), drop_duplicates=cfg.data.drop_duplicates)
    else:
        train_rows, valid_rows = data_mod.split(train_rows, cfg.data.valid_fraction, cfg.train.seed)
    report.checks = task.data_checks(train_rows)
    return train_rows, valid_rows


def build_datasets(cfg: RunConfig, task: Task, tokenizer, fmt, train_rows, valid_rows, report):
    train_ds = build_dataset(train_rows, task, tokenizer, fmt, cfg.model.max_length, report)
    valid_ds = build_dataset(valid_rows, task, tokenizer, fmt, cfg.model.max_length,
                             data_mod.DataReport()) if valid_rows else None
    if len(train_ds) == 0:
        raise data_mod.DataError(cfg.data.train, "", "", f"no usable rows ({report.summary()})")
    return train_ds, valid_ds


def _trainer_class():
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer with the answer-only output layer above (no full-vocabulary logits, no entropy)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = completion_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
            return (loss, None) if return_outputs else loss

    return CompletionSFTTrainer


def lora_config(cfg: RunConfig):
    from peft import LoraConfig
    targets = cfg.lora.target_modules or models.default_target_modules(cfg.model)
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def use_bf16(cfg: RunConfig) -> bool:
    return models.bf16_fast() if cfg.train.bf16 == "auto" else cfg.train.bf16 == "true"


def sft_config(cfg: RunConfig, run_dir: Path, has_eval: bool):
    from trl import SFTConfig
    t = cfg.train
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs, max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=t.weight_decay, optim=t.optim, max_grad_norm=t.max_grad_norm,
        seed=t.seed, data_seed=t.seed, bf16=use_bf16(cfg), use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=t.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        eval_strategy="steps" if (has_eval and t.eval_steps > 0) else "no", eval_steps=t.eval_steps or None,
        completion_only_loss=True, max_length=cfg.model.max_length, report_to="none",
        dataloader_num_workers=0, disable_tqdm=not sys.stderr.isatty(),
    )


def _progress_callback(run_dir: Path, record: dict):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One readable line per log step (step, loss, time left) and run.json kept current."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.time(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs:
                if logs and "eval_loss" in logs:
                    models.log(f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}")
                return
            done = state.global_step - self.step0
            elapsed = time.time() - self.t0
            left = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
            models.log(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                       f"lr {logs.get('learning_rate', 0):.2e} | {_fmt(elapsed)} elapsed, ~{_fmt(left)} left")
            record["loss_curve"] = _curve(state.log_history)
            runs.write_json(run_dir / "run.json", record)

    return Progress()


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _curve(history: list[dict]) -> list[dict]:
    keep = ("step", "loss", "eval_loss", "learning_rate", "grad_norm")
    return [{k: h[k] for k in keep if k in h} for h in history if "loss" in h or "eval_loss" in h]


def plot_loss(curve: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    train = [(p["step"], p["loss"]) for p in curve if "loss" in p]
    evals = [(p["step"], p["eval_loss"]) for p in curve if "eval_loss" in p]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def train(task: Task, cfg: RunConfig, run_dir: Path, profile_reason: str, resume: bool = False,
          callbacks: tuple = ()) -> Path:
    """Train and write the run folder; returns it. Raises ConfigError/DataError before any training starts."""
    from transformers.trainer_utils import get_last_checkpoint

    t_start = time.time()
    # Everything that can fail on bad input happens before the run folder exists: nothing half-made is left.
    report = data_mod.DataReport()
    train_rows, valid_rows = read_splits(cfg, task, report)
    model, tokenizer, fmt = models.load(cfg.model, training=True)

    run_dir.mkdir(parents=True, exist_ok=True)
    previous = runs.read_json(run_dir / "run.json") if (resume and (run_dir / "run.json").is_file()) else {}
    record = {"status": "running", "product": task.name, "profile": cfg.profile, "profile_reason": profile_reason,
              "config": cfg.to_dict(), "versions": runs.versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "timings": {"load_model_s": round(time.time() - t_start, 1)}, "chat_format": fmt.family,
              "resumed_from": None, "history": previous.get("history", [])}
    save_yaml(cfg, run_dir / "config.yaml")
    runs.write_json(run_dir / "run.json", record)
    runs.mark_latest(run_dir)

    t0 = time.time()
    train_ds, valid_ds = build_datasets(cfg, task, tokenizer, fmt, train_rows, valid_rows, report)
    record["timings"]["prepare_data_s"] = round(time.time() - t0, 1)
    record["data"] = report.to_dict()
    runs.write_json(run_dir / "data_report.json", report.to_dict())
    models.log(f"data: {report.summary()}")

    trainer = _trainer_class()(model=model, args=sft_config(cfg, run_dir, valid_ds is not None),
                         train_dataset=train_ds, eval_dataset=valid_ds, processing_class=tokenizer,
                         peft_config=lora_config(cfg), callbacks=[_progress_callback(run_dir, record), *callbacks])
    trainable, total = trainer.model.get_nb_trainable_parameters()
    record["parameters"] = {"trainable": trainable, "total": total}
    checkpoint = get_last_checkpoint(str(run_dir / "checkpoints")) if resume and (run_dir / "checkpoints").is_dir() \
        else None
    if resume and checkpoint is None:
        models.log("no checkpoint found in this run folder: starting from step 0")
    record["resumed_from"] = checkpoint
    models.log(f"training {trainable:,} LoRA parameters of {total:,}; bf16={trainer.args.bf16}; "
               f"run folder {run_dir}")

    old_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        record.update(status="interrupted", loss_curve=_curve(trainer.state.log_history))
        runs.write_json(run_dir / "run.json", record)
        models.log(f"interrupted at step {trainer.state.global_step}. Resume from the last checkpoint with:\n"
                   f"  python -m apps.{task.name}.train --output-dir {run_dir} --resume")
        raise
    except BaseException:
        record["status"] = "failed"
        runs.write_json(run_dir / "run.json", record)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    train_s = time.time() - t0

    if valid_ds is not None:
        record["eval_loss"] = trainer.evaluate().get("eval_loss")
    _save_adapter(trainer, tokenizer, run_dir / "adapter")

    tokens = sum(len(x) for x in train_ds["input_ids"])
    steps_done = trainer.state.global_step - (int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0)
    record["timings"].update(train_s=round(train_s, 1), total_s=round(time.time() - t_start, 1))
    record["train"] = {"global_step": trainer.state.global_step, "steps_this_session": steps_done,
                       "epochs": round(trainer.state.epoch or 0, 3), "train_loss": result.training_loss,
                       "dataset_tokens": tokens,
                       "examples_per_s": round(steps_done * cfg.train.batch_size * cfg.train.grad_accum / train_s, 2)}
    record["loss_curve"] = _curve(trainer.state.log_history)
    record["history"] = record["history"] + [{"started": record["started"], "resumed_from": checkpoint,
                                              "steps": steps_done, "train_s": round(train_s, 1)}]
    plot_loss(record["loss_curve"], run_dir / "loss.png")
    record["status"] = "completed"
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    runs.write_json(run_dir / "run.json", record)
    return run_dir


def _save_adapter(trainer, tokenizer, out: Path) -> None:
    """Write adapter/ beside, then swap it in, so a crash never leaves a half-written adapter folder."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp), save_embedding_layers=False)
    tokenizer.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
