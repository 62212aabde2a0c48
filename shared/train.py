"""Supervised fine-tuning with TRL's SFTTrainer and a PEFT LoRA adapter (or the whole body, shared/full.py),
writing one run folder.

Flow: read + validate data -> tokenize once (prompt and completion separately, so the loss mask is exact)
-> drop rows over max_length (counted) -> SFTTrainer(peft_config=LoraConfig) with completion-only loss
-> checkpoints every save_steps (resumable) -> adapter/ (or model/) written atomically -> run.json status
"completed".
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import data as data_mod
from . import attention, full, lean, metric_eval, models, runs, vocab
from .cli import raise_terminated
from .config import ConfigError, RunConfig, save_yaml
from .log import log
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
    train_rows = task.read(cfg.data.train, report, limit=cfg.data.limit, drop_duplicates=cfg.data.drop_duplicates,
                           weights=cfg.data.weights, seed=cfg.train.seed)
    if cfg.data.valid:
        valid_rows = task.read(cfg.data.valid, data_mod.DataReport(), drop_duplicates=cfg.data.drop_duplicates)
    else:
        train_rows, valid_rows = data_mod.split(train_rows, cfg.data.valid_fraction, cfg.train.seed)
        report.rows_held_out = len(valid_rows)
    if len(train_rows) < task.min_train_rows:
        raise ConfigError(f"{cfg.data.train}: {len(train_rows)} usable training row(s) ({report.summary()}); the "
                          f"{task.name} needs at least {task.min_train_rows}")
    report.checks = task.data_checks(train_rows)
    return train_rows, valid_rows


def build_datasets(cfg: RunConfig, task: Task, tokenizer, fmt, train_rows, valid_rows, report):
    train_ds = build_dataset(train_rows, task, tokenizer, fmt, cfg.model.max_length, report)
    valid_ds = build_dataset(valid_rows, task, tokenizer, fmt, cfg.model.max_length,
                             data_mod.DataReport()) if valid_rows else None
    if len(train_ds) == 0:
        raise data_mod.DataError(cfg.data.train, "", "", f"no usable rows ({report.summary()})")
    if valid_ds is not None and len(valid_ds) == 0:  # every validation row too long: train without one
        log(f"no validation row fits max_length={cfg.model.max_length}: training without validation loss")
        valid_ds = None
    return train_ds, valid_ds


def check_output(run_dir: Path) -> None:
    """Pre-flight: the run folder can be created and written (tried for real, so read-only file systems and
    root-owned folders are caught too), before the model loads."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output folder {run_dir} exists and is not a folder")
    parent = runs.existing_ancestor(run_dir)
    if not parent.is_dir():
        raise ConfigError(f"cannot create the run folder {run_dir}: {parent} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:
        raise ConfigError(f"cannot write the run folder {run_dir}: {parent} is not writable ({e.strerror}). "
                          "Pick another --output-dir.") from None


def estimate_run_bytes(model, tokenizer, cfg: RunConfig) -> int:
    """Disk a run needs, estimated before it starts: each checkpoint holds the trained weights (fp32), Adam's
    two moments and the tokenizer, and under full fine-tuning the frozen weights too; save_total_limit of them
    are kept (plus the one being written), then the adapter or model folder."""
    folder = Path(getattr(tokenizer, "name_or_path", "") or "/nonexistent")
    tok = sum(f.stat().st_size for f in folder.glob("tokenizer*") if f.is_file()) if folder.is_dir() else 0
    kept = (cfg.train.save_total_limit or 1) + 1
    if cfg.train.method == "full":
        frozen = full.frozen_parameters(model)
        body = sum(p.numel() for p in model.parameters() if id(p) not in frozen)
        rest = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) in frozen)
        final = sum(p.numel() * p.element_size() for p in model.parameters())
        return int(1.2 * (kept * (12 * body + rest + tok) + final + tok)) + (16 << 20)
    lora = sum(cfg.lora.r * (m.in_features + m.out_features)
               for m in models.targeted_linears(model, lora_targets(cfg, model)))
    return int(1.2 * (kept * (12 * lora + tok) + 4 * lora + tok)) + (16 << 20)


def check_space(run_dir: Path, need: int) -> None:
    """Pre-flight: refuse to start a run that would fill the disk half-way (a failed checkpoint loses work)."""
    parent = runs.existing_ancestor(Path(run_dir))
    free = shutil.disk_usage(parent).free
    if free < need:
        raise ConfigError(f"not enough free disk space for the run folder {run_dir}: it needs about "
                          f"{need / 2**20:,.0f} MiB (checkpoints + adapter), {free / 2**20:,.0f} MiB are free on "
                          f"{parent}. Free some space, pick another --output-dir, or lower train.save_total_limit.")


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint-N (`runs.is_complete_checkpoint`). A checkpoint half-written when the
    process was killed is set aside, never resumed from."""
    for d in reversed(runs.checkpoint_folders(folder)):
        if runs.is_complete_checkpoint(d):
            return str(d)
        log(f"{d.name} is incomplete (the run stopped while writing it): removing it")
        shutil.rmtree(d, ignore_errors=True)
    return None


def _trainer_class():
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer with the answer-only output layer above (no full-vocabulary logits, no entropy)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if hasattr(model, "module") and model is not self.model:  # DDP / FSDP / DeepSpeed wrapper
                loss = _through_wrapper(model, lambda inner: completion_loss(
                    inner, inputs, num_items_in_batch, self.share_prefix, self.output_vocab, self.saved_dtype))
            else:
                with self.mixed_precision():
                    loss = completion_loss(model, inputs, num_items_in_batch, self.share_prefix, self.output_vocab,
                                           self.saved_dtype)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
            return (loss, None) if return_outputs else loss

        def train(self, *args, **kwargs):
            models.release_free_memory()  # what building the trainer freed (measured: 48 MB, float32 on a CPU)
            return super().train(*args, **kwargs)

        def _load_optimizer_and_scheduler(self, checkpoint):
            super()._load_optimizer_and_scheduler(checkpoint)
            # Resumed with more steps than the run started with: the optimizer holds the rate where the old
            # schedule ended (0 at the end of a linear decay) for one step; the schedule of the new length, which
            # the scheduler already follows, takes over from the first resumed step instead.
            scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)  # under accelerate's wrapper
            if checkpoint is not None and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                for group, base, factor in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                    group["lr"] = base * factor(scheduler.last_epoch)
                scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # what gets logged

        def _run_epoch(self, *args, **kwargs):
            # Resumed from a checkpoint of the last step where that step ends mid-epoch (max_steps, or 1.2 epochs):
            # transformers checks for the end only after a step, so it would train one step past the end.
            if self.state.global_step >= self.state.max_steps > 0:
                self.control.should_training_stop = True
                return None
            return super()._run_epoch(*args, **kwargs)

        product_metric = None  # metric_eval.ProductMetric, set by build_trainer when the run asks for one
        share_prefix = False  # train.share_prefix, set by build_trainer (shared/loss.py:backbone_hidden)
        output_vocab = None  # shared.vocab.OutputVocab when train.output_vocab = answers
        autocast = False  # set by loss_settings for train.method = full (fp32 trained weights, bf16 matmuls)
        saved_dtype = None  # train.saved_activations, resolved by loss_settings (shared/lean.py:saved_in)

        def mixed_precision(self):
            """Autocast around our calls into the model: they bypass the forward accelerate wraps in autocast.
            LoRA layers cast their input themselves; a float32 body next to bf16 embeddings needs autocast."""
            return self.accelerator.autocast() if self.autocast else contextlib.nullcontext()

        def evaluation_loop(self, *args, **kwargs):
            """The validation loss, plus the product's metric on generated answers in the same metrics dict:
            logged, shown, and seen by the best-checkpoint and early-stopping logic like the loss."""
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", "eval")
            if self.product_metric is not None and prefix == "eval":
                with self.mixed_precision():
                    output.metrics[f"eval_{self.product_metric.task.metric_name}"] = self.product_metric(self.model)
            return output

    return CompletionSFTTrainer


def _through_wrapper(wrapper, compute):
    """Run compute(inner model) as the forward of a DDP/FSDP/DeepSpeed wrapper, so the wrapper's own forward
    runs around it: DDP prepares its gradient all-reduce there (calling the inner model directly, as the
    answer-only loss does, would leave every process training on its own slice), FSDP gathers parameters."""
    inner = wrapper.module
    patched = inner.__dict__.get("forward")  # accelerate may have wrapped forward (autocast): put it back after
    inner.forward = lambda *args, **kwargs: compute(inner)
    try:
        return wrapper()
    finally:
        if patched is not None:
            inner.forward = patched
        else:
            del inner.forward


def lora_targets(cfg: RunConfig, model) -> list[str] | str:
    """The run's LoRA target names as the loaded model spells them (fused or split projections)."""
    return models.resolve_target_modules(model, cfg.lora.target_modules or models.default_target_modules(cfg.model))


def lora_config(cfg: RunConfig, model):
    """PEFT's LoraConfig for the run on this model."""
    from peft import LoraConfig
    targets = lora_targets(cfg, model)
    # PiSSA with a fast randomized SVD (4 subspace iterations): an exact SVD of every 640x2048 matrix costs
    # minutes on a CPU for the same start.
    init = {"default": True, "pissa": "pissa_niter_4", "gaussian": "gaussian"}[cfg.lora.init]
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", use_rslora=cfg.lora.use_rslora,
                      use_dora=cfg.lora.use_dora, init_lora_weights=init)


def check_processes(cfg: RunConfig) -> None:
    """Under several processes train.batch_size is the global batch; it must split evenly between them."""
    world = runs.process_count()
    if world == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true":
        log("one process: `accelerate launch --cpu` starts a single process unless MPI is set up; for "
                   "several CPU processes use `accelerate launch --multi_gpu --num_processes N` (docs/gpu.md)")
    if world > 1 and cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is the global batch and must split evenly "
                          f"over the {world} processes; use a multiple of {world}")


def check_method(cfg: RunConfig) -> None:
    """Unsloth builds its own LoRA layers: the PEFT-only variants are refused there, before anything loads."""
    if models.resolve_backend(cfg.model) != "unsloth":
        return
    if cfg.lora.use_dora or cfg.lora.init != "default":
        raise ConfigError("lora.use_dora and lora.init pissa/gaussian need the transformers backend (Unsloth builds "
                          "its own LoRA layers): add --backend transformers")
    if cfg.train.method == "full":
        raise ConfigError("train.method=full runs on the transformers backend (the Unsloth backend here trains "
                          "LoRA adapters): add --backend transformers")


def report_to(cfg: RunConfig) -> list[str]:
    """What transformers reports to itself; TensorBoard is added by tracking_callbacks, so that its event files
    go into the run folder (transformers would put them under checkpoints/)."""
    return ["wandb"] if cfg.train.report_to == "wandb" else []


def check_tracking(cfg: RunConfig) -> None:
    """Pre-flight for train.report_to: the tracker imports, and W&B has a login or offline mode."""
    want = cfg.train.report_to
    if want == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError("train.report_to=tensorboard needs the tensorboard package: pip install tensorboard") \
                from None
    elif want == "wandb":
        try:
            import wandb
        except ImportError:
            raise ConfigError("train.report_to=wandb needs the wandb package: pip install wandb (then wandb login), "
                              "or use train.report_to=tensorboard") from None
        offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled")
        if not offline and not (os.environ.get("WANDB_API_KEY") or _wandb_logged_in(wandb)):
            raise ConfigError("train.report_to=wandb: not logged in to Weights & Biases. Run `wandb login`, set "
                              "WANDB_API_KEY, or WANDB_MODE=offline to log locally")


def _wandb_logged_in(wandb) -> bool:
    try:
        return bool(wandb.api.api_key)
    except Exception:  # noqa: BLE001 - an unreadable netrc or settings file counts as no login
        return False


def tracking_callbacks(cfg: RunConfig, run_dir: Path) -> list:
    if cfg.train.report_to != "tensorboard" or not runs.is_main_process():
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "tensorboard")))]


def use_bf16(cfg: RunConfig) -> bool:
    return models.mixed_precision(cfg.train.bf16)[0]


def sft_config(cfg: RunConfig, run_dir: Path, has_eval: bool, best_metric: str | None = None,
               greater_is_better: bool = True):
    """The Trainer's arguments. best_metric: the product metric's key (eval_<name>) when train.keep watches it."""
    unsloth = models.resolve_backend(cfg.model) == "unsloth"
    if unsloth:  # imported before TRL and the model: it patches their classes (and only for this backend)
        from .unsloth_backend import activate
        activate()
    from trl import SFTConfig
    t = cfg.train
    bf16, fp16 = models.mixed_precision(t.bf16)  # fp16 on a GPU without native bf16 (T4, V100)
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs, max_steps=t.max_steps if t.max_steps > 0 else -1,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=t.weight_decay, optim=t.optim, max_grad_norm=t.max_grad_norm,
        seed=t.seed, data_seed=t.seed, bf16=bf16, fp16=fp16, use_cpu=not torch.cuda.is_available(),
        # with Unsloth, its own checkpointing is switched on in unsloth_backend.add_lora instead
        activation_checkpointing=t.gradient_checkpointing and not unsloth,
        # Several processes (accelerate launch): train.batch_size is the global batch, and each process takes
        # its slice of every batch, so the data order and the loss do not depend on the number of processes.
        accelerator_config={"split_batches": True} if runs.process_count() > 1 else None,
        ddp_find_unused_parameters=False if runs.process_count() > 1 else None,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        eval_strategy="steps" if (has_eval and t.eval_steps > 0) else "no", eval_steps=t.eval_steps or None,
        **best_checkpoint_args(t, has_eval, best_metric, greater_is_better),
        neftune_noise_alpha=t.neftune_alpha or None,
        completion_only_loss=True, max_length=cfg.model.max_length, report_to=report_to(cfg),
        # Said explicitly because Unsloth's patched SFTConfig switches padding-free batching on, which the
        # answer-only loss (padded batches with a completion mask) does not expect.
        padding_free=False, packing=False,
        dataloader_num_workers=0, disable_tqdm=not sys.stderr.isatty(),
    )


def best_checkpoint_args(t, has_eval: bool, best_metric: str | None, greater_is_better: bool) -> dict:
    """The Trainer's own best-checkpoint machinery, pointed at the validation loss or the product metric: at
    the end it reloads the best checkpoint, which then becomes the run's adapter."""
    if t.keep == "last" or not has_eval:
        return {}
    if t.keep == "best_metric":
        if best_metric is None:
            raise ConfigError("train.keep=best_metric: this product has no metric to watch; use best_loss")
        return {"load_best_model_at_end": True, "metric_for_best_model": best_metric,
                "greater_is_better": greater_is_better}
    return {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False}


def _progress_callback(run: runs.Run):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One readable line per log step (step, loss, time left) and run.json kept current."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.time(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero:  # several processes: rank 0 reports and writes run.json
                return
            if not logs or "loss" not in logs:
                if logs and "eval_loss" in logs:
                    extra = "".join(f", {k[5:]} {v:.2f}" for k, v in logs.items() if k.startswith("eval_")
                                    and k not in ("eval_loss", "eval_runtime") and isinstance(v, float)
                                    and not k.endswith("_per_second"))
                    log(f"step {state.global_step}: validation loss {logs['eval_loss']:.4f}{extra}")
                    run.record.loss_curve = _curve(state.log_history)
                    run.save()
                return
            done = state.global_step - self.step0
            elapsed = time.time() - self.t0
            left = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
            log(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
                f"lr {logs.get('learning_rate', 0):.2e} | {_fmt(elapsed)} elapsed, ~{_fmt(left)} left")
            run.record.loss_curve = _curve(state.log_history)
            run.save()

    return Progress()


def _fmt(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _curve(history: list[dict]) -> list[dict]:
    """Training and validation points of the Trainer's log: loss, learning rate, gradient norm, and the
    product metric (eval_<name>) where one was computed."""
    keep = ("step", "loss", "eval_loss", "learning_rate", "grad_norm")
    speed = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    return [{k: v for k, v in h.items() if k in keep or (k.startswith("eval_") and k not in speed)}
            for h in history if "loss" in h or "eval_loss" in h]


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
    handles, labels = ax.get_legend_handles_labels()
    metric = next((k for p in curve for k in p if k.startswith("eval_") and k != "eval_loss"), None)
    if metric:  # the product's metric on a second axis: where it peaks is not where the loss bottoms out
        points = [(p["step"], p[metric]) for p in curve if metric in p]
        right = ax.twinx()
        right.plot(*zip(*points), "s--", color="tab:green", label=f"validation {metric[5:]}")
        right.set_ylabel(metric[5:])
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(task: Task, cfg: RunConfig, run_dir: Path, profile_reason: str, resume: bool = False,
          overwrite: bool = False, callbacks: tuple = ()) -> Path:
    """Train and write the run folder; returns it. Everything that can fail on bad input fails before the
    model loads, and nothing is written before it: a refused run leaves no trace."""
    t_start = time.time()
    prep = preflight(task, cfg, Path(run_dir), resume, overwrite)
    # The Trainer's arguments exist before the model loads: under DeepSpeed ZeRO-3 transformers then knows,
    # while loading, to partition the weights across processes instead of loading all of them on every one.
    args = sft_config(cfg, prep.run_dir, has_eval=bool(prep.valid_rows),
                      best_metric=f"eval_{task.metric_name}" if task.metric_name else None,
                      greater_is_better=task.greater_is_better)
    model, tokenizer, fmt = models.load(cfg.model, training=True)
    check_space(prep.run_dir, estimate_run_bytes(model, tokenizer, cfg))
    load_s = time.time() - t_start
    t0 = time.time()
    train_ds, valid_ds = build_datasets(cfg, task, tokenizer, fmt, prep.train_rows, prep.valid_rows, prep.report)
    if valid_ds is None:
        from transformers.trainer_utils import IntervalStrategy
        args.eval_strategy = IntervalStrategy.NO
    timings = {"load_model_s": round(load_s, 1), "prepare_data_s": round(time.time() - t0, 1)}
    output_ids = output_vocabulary(cfg, tokenizer, fmt, train_ds, valid_ds)
    with _owned(prep):
        run = open_run(task, cfg, prep, profile_reason, model, fmt, timings)
        metric = metric_eval.for_run(task, cfg, prep.valid_rows if valid_ds is not None else [], tokenizer, fmt,
                                     output_ids)
        trainer = build_trainer(cfg, args, run, model, tokenizer, train_ds, valid_ds, callbacks, metric)
        loss_settings(trainer, cfg, model, output_ids)
        if output_ids is not None and runs.is_main_process():
            vocab.save(run.path, output_ids, len(tokenizer))
        result, checkpoint, train_s = fit(task, trainer, run, tokenizer, resume, valid_ds is not None)
        complete(cfg, run, trainer, result, checkpoint, train_s, train_ds, t_start)
    return prep.run_dir


def loss_settings(trainer, cfg: RunConfig, model, output_ids: list[int] | None) -> None:
    """How a CompletionSFTTrainer's step computes: the shared prefix, the output vocabulary, the saved activations'
    dtype, the lean LoRA layers, the attention."""
    # Unsloth replaces the model's forward with its own kernels; the shared prefix is for the stock forward.
    trainer.share_prefix = cfg.train.share_prefix and models.resolve_backend(cfg.model) != "unsloth"
    trainer.autocast = cfg.train.method == "full"
    trainer.saved_dtype = saved_activation_dtype(cfg)
    if output_ids is not None:
        trainer.output_vocab = vocab.OutputVocab(output_ids, model.get_output_embeddings().weight.shape[0])
    if cfg.train.method == "lora" and cfg.train.lean_lora and (fused := lean.install_lora(trainer.model)):
        log(f"lean LoRA forward and backward: {fused} layers (shared/lean.py)")
    if cfg.train.lean_attention and attention.install(model):
        log("training attention: one float32 score matmul per key/value head (shared/attention.py)")


def saved_activation_dtype(cfg: RunConfig) -> torch.dtype | None:
    """train.saved_activations as a dtype for shared.lean.saved_in (None: as computed)."""
    wanted = cfg.train.saved_activations
    if wanted == "auto":
        float32_cpu = not torch.cuda.is_available() and models.weight_dtype(cfg.model) == torch.float32
        wanted = "bfloat16" if float32_cpu and cfg.model.quantization == "none" else "computed"
    return torch.bfloat16 if wanted == "bfloat16" else None


def output_vocabulary(cfg: RunConfig, tokenizer, fmt, train_ds, valid_ds) -> list[int] | None:
    """The token ids the loss and decoding use when train.output_vocab = answers (shared/vocab.py)."""
    if cfg.train.output_vocab != "answers":
        return None
    from .generate import stop_ids
    answers = [[i for i, m in zip(row["input_ids"], row["completion_mask"]) if m]
               for ds in (train_ds, valid_ds) if ds is not None for row in ds]
    ids = vocab.answer_vocabulary(tokenizer, answers, stop_ids(tokenizer, fmt))
    log(f"output vocabulary: {vocab.describe(ids, len(tokenizer))} (the scripts of the training answers)")
    return ids


@dataclasses.dataclass
class Preflight:
    run_dir: Path
    train_rows: list
    valid_rows: list
    report: data_mod.DataReport
    previous: runs.Run | None = None  # the run being resumed, as the ownership check read it (rank 0)
    replace: bool = False  # --overwrite of an existing run: moved aside when the new run starts writing


def preflight(task: Task, cfg: RunConfig, run_dir: Path, resume: bool, overwrite: bool) -> Preflight:
    """Checks that need no model: processes, data (read and validated), the run folder (ours to write?),
    experiment tracking. Under several processes rank 0 decides about the folder and the others follow."""
    check_processes(cfg)
    report = data_mod.DataReport()
    train_rows, valid_rows = read_splits(cfg, task, report)
    check_tracking(cfg)
    check_method(cfg)
    previous, replace = None, False
    if runs.is_main_process():
        previous = runs.claim(run_dir, task.name, resume, overwrite, task.commands())
        replace = overwrite and previous is None and (run_dir / "run.json").exists()
        check_output(run_dir)
    runs.same_on_all_processes(True)  # the others wait for rank 0's verdict on the folder
    return Preflight(run_dir, train_rows, valid_rows, report, previous, replace)


@contextlib.contextmanager
def _owned(prep: Preflight):
    """The run folder, created and locked by the process that writes it, for the length of the training.
    Only here, with the model loaded and the data ready, does --overwrite move the old run aside: a run that
    stops before this point (a wrong model name, no usable rows, Ctrl-C while loading) leaves it in place."""
    main = runs.is_main_process()
    if main and prep.replace:
        runs.move_aside(prep.run_dir)
    runs.same_on_all_processes(True)  # the others wait until rank 0 has moved the old run aside
    if not main:
        yield
        return
    prep.run_dir.mkdir(parents=True, exist_ok=True)
    with runs.RunLock(prep.run_dir):
        if prep.previous is None and (prep.run_dir / "run.json").exists():
            raise ConfigError(f"another training wrote a run into {prep.run_dir} while this one was loading; "
                              "nothing in it was touched. Pick another --output-dir")
        yield


def open_run(task: Task, cfg: RunConfig, prep: Preflight, profile_reason: str, model, fmt, timings) -> runs.Run:
    """The run record, written before the first step. A resumed run keeps its history; evaluations of the
    adapter it had are moved aside, since they no longer describe the adapter this training will write."""
    main = runs.is_main_process()
    previous = prep.previous
    run = runs.Run.create(prep.run_dir, task.name, cfg.to_dict(), task.commands(), profile=cfg.profile,
                          profile_reason=profile_reason, chat_format=fmt.family, versions=runs.versions(),
                          base_model=models.fingerprint(model), timings=timings, data=prep.report.to_dict(),
                          history=previous.record.history if previous else [])
    if main:
        if previous and (prep.run_dir / "eval").is_dir():
            aside = prep.run_dir / f"eval-before-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(prep.run_dir / "eval", aside)
            log(f"the run's earlier evaluations were moved to {aside}: they scored the adapter before this training")
        save_yaml(cfg, prep.run_dir / "config.yaml")
        run.save()
        runs.mark_latest(run, runs.runs_root(cfg.output.runs_root))
        runs.write_json(prep.run_dir / "data_report.json", prep.report.to_dict())
    log(f"data: {prep.report.summary()}")
    return run


def build_trainer(cfg: RunConfig, args, run: runs.Run, model, tokenizer, train_ds, valid_ds, callbacks,
                  metric=None):
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    peft_config = lora_config(cfg, model) if cfg.train.method == "lora" else None
    torch.manual_seed(cfg.train.seed)  # the adapter's initialisation (and PiSSA's randomized SVD) from the seed
    if cfg.train.method == "full":
        full.prepare(model)
    elif models.resolve_backend(cfg.model) == "unsloth":  # Unsloth adds the LoRA layers itself (its kernels)
        from .unsloth_backend import add_lora
        model, peft_config = add_lora(model, cfg), None
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
                               processing_class=tokenizer, peft_config=peft_config,
                               callbacks=[_progress_callback(run), *tracking_callbacks(cfg, run.path), *callbacks])
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; the Progress line says the same, readably
    if peft_config is not None:  # PEFT errors only when no name matches: count that every target got LoRA
        models.check_lora_coverage(trainer.model, lora_targets(cfg, trainer.model.get_base_model()))
    trainer.product_metric = metric
    if cfg.train.early_stopping and args.load_best_model_at_end:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping))
    if cfg.train.method == "lora" and cfg.lora.init == "pissa":
        _keep_pissa_start(trainer, run.path)
    trainable, total = trainable_parameters(trainer.model)
    run.record.parameters = {"trainable": trainable, "total": total}
    if cfg.train.method == "lora":
        what = "LoRA parameters"
    else:
        what = "weights of the body (embeddings frozen)"
        log("train.method full: the lora settings (r, alpha, rsLoRA, DoRA, init) are not used")
    log(f"training {trainable:,} {what} of {total:,}; bf16={args.bf16} fp16={args.fp16}; run folder {run.path}")
    return trainer


def trainable_parameters(model) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):  # PEFT counts the adapter against the base
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def fit(task: Task, trainer, run: runs.Run, tokenizer, resume: bool, has_eval: bool):
    """Train (from the last complete checkpoint when resuming), then write adapter/. A stop or a failure marks
    the run interrupted or failed in run.json and is raised again."""
    main = runs.is_main_process()
    checkpoint = last_complete_checkpoint(run.checkpoints_dir) if resume else None
    if resume and checkpoint is None:
        log("no checkpoint found in this run folder: starting from step 0")
    run.record.resumed_from = checkpoint
    old_handler = signal.signal(signal.SIGTERM, raise_terminated)
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        train_s = time.time() - t0
        # Still inside: a stop while evaluating or writing adapter/ marks the run too (the last checkpoint holds
        # every step, so --resume only redoes this part).
        if has_eval:
            scored = {h["step"] for h in trainer.state.log_history if "eval_loss" in h}
            run.record.eval_loss = trainer.evaluate().get("eval_loss")
            # The kept weights' score is a point of the curve only when they are the last step's and that step
            # has none yet: a best checkpoint's, drawn at the last step, would be a false point of the curve.
            kept_last = not trainer.args.load_best_model_at_end and trainer.state.global_step not in scored
            if not kept_last and "eval_loss" in trainer.state.log_history[-1]:
                trainer.state.log_history.pop()
        _save_weights(trainer, tokenizer, run.weights_dir, run.is_full)
    except KeyboardInterrupt:
        run.record.status, run.record.loss_curve = "interrupted", _curve(trainer.state.log_history)
        _end_session(run, trainer, checkpoint, time.time() - t0, "interrupted")
        if main:
            run.save()
        log(f"interrupted at step {trainer.state.global_step}. Resume from the last checkpoint with:\n"
            f"  {task.command('train')} --output-dir {shlex.quote(str(run.path))} --resume")
        raise
    except BaseException as e:
        run.record.status, run.record.error = "failed", f"{e.__class__.__name__}: {e}"[:500]
        _end_session(run, trainer, checkpoint, time.time() - t0, "failed")
        if main:
            run.save()
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    return result, checkpoint, train_s


def _steps_since(trainer, checkpoint: str | None) -> int:
    return max(0, trainer.state.global_step - (int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0))


def _end_session(run: runs.Run, trainer, checkpoint: str | None, train_s: float, status: str) -> None:
    """One entry of run.json's history per training session, stopped ones too: a resumed run's record then
    accounts for every session (train.* and timings describe the last one)."""
    run.record.history = run.record.history + [{"started": run.record.started, "resumed_from": checkpoint,
                                                "steps": _steps_since(trainer, checkpoint),
                                                "train_s": round(train_s, 1), "status": status}]


def complete(cfg: RunConfig, run: runs.Run, trainer, result, checkpoint, train_s: float, train_ds,
             t_start: float) -> None:
    """Record what the training did, plot the loss, and only then mark the run completed."""
    rec = run.record
    tokens = sum(len(x) for x in train_ds["input_ids"])
    steps_done = _steps_since(trainer, checkpoint)
    rec.timings.update(train_s=round(train_s, 1), total_s=round(time.time() - t_start, 1))
    rec.train = {"global_step": trainer.state.global_step, "steps_this_session": steps_done,
                 "epochs": round(trainer.state.epoch or 0, 3), "train_loss": result.training_loss,
                 "dataset_tokens": tokens,
                 "examples_per_s": round(steps_done * cfg.train.batch_size * cfg.train.grad_accum / train_s, 2),
                 "kept": cfg.train.keep, "best_checkpoint": trainer.state.best_model_checkpoint,
                 "best_value": trainer.state.best_metric}
    rec.loss_curve = _curve(trainer.state.log_history)
    _end_session(run, trainer, checkpoint, train_s, "completed")
    rec.status, rec.finished = "completed", time.strftime("%Y-%m-%d %H:%M:%S")
    if runs.is_main_process():
        plot_loss(rec.loss_curve, run.path / "loss.png")
        run.save()
    trainer.accelerator.wait_for_everyone()  # no process returns before the run folder is complete


def _keep_pissa_start(trainer, run_dir: Path) -> None:
    """PiSSA moves the base weights' principal part into the adapter, so its adapter only fits the modified
    base. The adapter as initialised is kept (once: a resumed run re-creates the same start from the seed), so
    that the saved adapter can be converted to a plain LoRA that fits the original base."""
    start = run_dir / runs.PISSA_START
    if runs.is_main_process() and not (start / "adapter_config.json").is_file():
        trainer.model.save_pretrained(str(start), save_embedding_layers=False)


def _save_weights(trainer, tokenizer, out: Path, full_model: bool) -> None:
    """Write adapter/ (or model/) beside, then swap it in, so a crash never leaves a half-written folder."""
    tmp = out.with_name(out.name + ".tmp")
    main = trainer.args.should_save  # rank 0 under several processes
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # sharded weights (FSDP, ZeRO-3): every process takes part in gathering them; rank 0 writes
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(tmp))
    elif main:
        start = out.parent / runs.PISSA_START
        # a PiSSA adapter is saved as the plain LoRA (rank 2r) it amounts to on the unmodified base
        convert = {"path_initial_model_for_weight_conversion": str(start)} if start.is_dir() else {}
        if full_model:
            full.save(trainer.model, tokenizer, tmp)
        else:
            trainer.model.save_pretrained(str(tmp), save_embedding_layers=False, **convert)
    if main:
        tokenizer.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    trainer.accelerator.wait_for_everyone()
