"""Experiment tracking and a quiet log: TensorBoard event files in the run folder with the logged scalars, a
clear one-line refusal for a tracker that cannot start, and no warning the user cannot act on."""
from __future__ import annotations

import os
import subprocess
import sys

from .conftest import PAIRS, ROOT, write_jsonl


def _train(tmp_path, model_dir, *extra, env=None):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS * 4])
    args = ["--model", str(model_dir), "--model.chat_template", "chatml", "--model.dtype", "float32",
            "--data", str(data), "--data.valid_fraction", "0.25", "--model.max_length", "256",
            "--max-steps", "4", "--train.batch_size", "4", "--train.logging_steps", "1", "--train.eval_steps", "2",
            "--train.bf16", "false", "--lora.r", "4", "--output-dir", str(tmp_path / "run"), *extra]
    return subprocess.run([sys.executable, "-m", "apps.translator.train", *args], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True,
                          text=True, timeout=600)


def test_tensorboard_logs_into_the_run_folder_and_the_log_is_quiet(tmp_path, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done = _train(tmp_path, tiny_model_dir, "--train.report_to", "tensorboard",
                  "--train.gradient_checkpointing", "true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FutureWarning" not in done.stderr and "Warning:" not in done.stderr, done.stderr
    assert "{'loss'" not in done.stdout + done.stderr  # raw log dicts: the progress line says it readably
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "eval/loss"} <= set(scalars), scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


def test_wandb_that_cannot_start_is_one_line_before_loading(tmp_path, tiny_model_dir):
    done = _train(tmp_path, tiny_model_dir, "--train.report_to", "wandb",
                  env={"WANDB_API_KEY": "", "WANDB_MODE": "", "HOME": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "train.report_to=wandb" in errors[0]
    assert not (tmp_path / "run").exists()
