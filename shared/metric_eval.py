"""The product's own metric during training: generate on a fixed validation sample at every evaluation and
score it (chrF++ for the translator, MAE for prices) next to the validation loss.

The loss says how well the model predicts the reference token by token; what a user gets is a generated
answer, and the two part ways (a model can lower its loss while falling into repetition loops). The metric
goes into the Trainer's evaluation metrics as `eval_<name>`, so the Trainer's own best-checkpoint and early
stopping machinery (`metric_for_best_model`) can use it, and the run record, TensorBoard and the progress
line show it.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from . import vocab
from .config import GenerateSettings
from .log import log
from .task import Task


class ProductMetric:
    """Callable on a model: (metric name, value) on the first `samples` validation rows, greedy decoding."""

    def __init__(self, task: Task, rows: list, tokenizer, fmt, gen: GenerateSettings, samples: int,
                 output_ids: list[int] | None = None):
        self.task, self.rows, self.tokenizer, self.fmt = task, rows[:samples], tokenizer, fmt
        self.output_ids = output_ids  # the run's output vocabulary: decode over it, as evaluate does
        self.gen = GenerateSettings(**{**gen.__dict__, "do_sample": False})  # a repeatable measurement
        self.prompts = [task.inference_prompt(r, fmt) for r in self.rows]
        self.budgets = [task.answer_budget(r, tokenizer) for r in self.rows]

    @property
    def key(self) -> str:
        return f"eval_{self.task.metric_name}"

    def __call__(self, model) -> float:
        from .generate import generate

        t0 = time.time()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), vocab.limited_vocabulary(model, self.output_ids):
                answers = generate(model, self.tokenizer, self.fmt, self.prompts, self.gen, self.budgets)
        finally:
            model.train(was_training)
        value = float(self.task.metric(self.rows, answers))
        log(f"{self.task.metric_name} on {len(self.rows)} validation rows: {value:.2f} ({time.time() - t0:.0f} s)")
        return value


def for_run(task: Task, cfg, valid_rows: list, tokenizer, fmt, output_ids: list[int] | None = None
            ) -> ProductMetric | None:
    """The run's product metric, or None when the task has none, there is no validation data, or it is off."""
    if not task.metric_name or not valid_rows or cfg.train.metric_samples <= 0 or cfg.train.eval_steps <= 0:
        return None
    # greedy even when the run decodes with beams: the metric only ranks checkpoints, and beam search would
    # triple the time of every evaluation (translator, 4 beams: 86 s against 29 s for 240 sentences)
    gen = dataclasses.replace(cfg.generate, num_beams=1)
    return ProductMetric(task, valid_rows, tokenizer, fmt, gen, cfg.train.metric_samples, output_ids)
