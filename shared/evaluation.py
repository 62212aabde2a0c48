"""Batch evaluation plumbing shared by the products: the same prompts through the fine-tuned model and,
with the adapter switched off, through the base model (one copy of the weights)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from . import runs
from .config import RunConfig
from .data import DataReport, Row
from .generate import base_model, generate, load_run
from .log import log
from .task import Task


@dataclasses.dataclass
class Predictions:
    run_dir: Path
    source: str
    rows: list[Row]
    finetuned: list[str]
    base: list[str] | None
    decoding: dict
    timings: dict
    cfg: RunConfig  # the run's config, as loaded with it
    extra: object = None  # what the `extra` hook returned (e.g. the price predictor's beam candidates)


def predict_both(task: Task, run: str, data: str | None = None, limit: int = 0, last: int = 0,
                 with_base: bool = True, extra=None, **generate_overrides) -> Predictions:
    """Generate raw answers for every test row with the fine-tuned model and (optionally) the base model.

    extra: optional fn(model, tokenizer, fmt, prompts) -> anything, run with the fine-tuned model loaded, for
    a product's own decoding on the same weights (no second load)."""
    run_dir = runs.find_run(run, "runs", task.name)
    model, tokenizer, fmt, cfg = load_run(run_dir)
    gen = dataclasses.replace(cfg.generate, **{k: v for k, v in generate_overrides.items() if v})
    source = data or cfg.data.test
    rows = task.read(source, DataReport(), limit=limit, last=last, drop_duplicates=False)
    prompts = [task.inference_prompt(r, fmt) for r in rows]
    budgets = [task.answer_budget(r, tokenizer) for r in rows]
    log(f"evaluating {len(rows)} rows of {source}")
    timings = {}
    t0 = time.time()
    tuned = generate(model, tokenizer, fmt, prompts, gen, budgets, progress="fine-tuned")
    timings["finetuned_s"] = round(time.time() - t0, 1)
    base = None
    if with_base:
        t0 = time.time()
        with base_model(model):
            base = generate(model, tokenizer, fmt, prompts, gen, budgets, progress="base")
        timings["base_s"] = round(time.time() - t0, 1)
    extra_result = None
    if extra is not None:
        t0 = time.time()
        extra_result = extra(model, tokenizer, fmt, prompts)
        timings["extra_s"] = round(time.time() - t0, 1)
    return Predictions(run_dir, source, rows, tuned, base, dataclasses.asdict(gen), timings, cfg, extra_result)
