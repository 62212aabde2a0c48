"""Batch evaluation plumbing shared by the products: the same prompts through the fine-tuned model and,
with the adapter switched off, through the base model (one copy of the weights)."""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from . import runs
from .config import ConfigError, RunConfig
from .data import DataError, DataReport, Row, overlap, split_sources
from .generate import base_model, generate, load_run
from .log import log
from .task import Task


@dataclasses.dataclass
class Predictions:
    run: runs.Run
    source: str
    rows: list[Row]
    finetuned: list[str]
    base: list[str] | None
    decoding: dict
    timings: dict
    cfg: RunConfig  # the run's config, as loaded with it
    base_decoding: dict | None = None  # the base model's, when it was decoded
    extra: object = None  # what the `extra` hook returned (e.g. the price predictor's beam candidates)


@dataclasses.dataclass
class EvalPlan:
    """What an evaluation needs, checked and read before any model loads: a bad test file or a moved training
    file fails in seconds, not after minutes of generation."""
    run: runs.Run
    cfg: RunConfig
    source: str
    name: str  # eval/<name>/: the run's own test file is 'test', another file its own name
    rows: list[Row]


# How a decoding setting given on the command line shows in an evaluation's folder name (decoding_tag).
# first_line and batch_size are left out: they do not change what is scored.
TAG_LABELS = {"num_beams": "beams{}", "beams": "beams{}", "beam_pick": "pick-{}", "max_new_tokens": "max{}",
              "repetition_penalty": "rp{}", "no_repeat_ngram_size": "no-repeat{}"}

# The base model is decoded greedily unless asked otherwise (--base-beams). It is not instruction-tuned and
# mostly repeats the system prompt, so beams change its score little (translator, 240 test pairs: chrF++ 1.67
# with 4 beams, 1.68 greedy), while beam search over its whole 262k-token vocabulary is the first README
# command's largest cost after training: 100 s against 35 s greedy on a float32 Xeon, 136 s against 53 s with
# torch capped to AVX2 there, where that command has to fit in 10 minutes (docs/speed.md).
BASE_BEAMS = 1


def decoding_tag(cfg: RunConfig, given: dict) -> str:
    """'-beams1', '-beams8-pick-score', '-full-vocab', ...: the decoding settings given for this evaluation that
    differ from the run's own (generate.*), so a quick check with other settings sits beside the evaluation with
    the run's decoding instead of replacing it. '' when they are the run's."""
    parts = []
    for key, value in given.items():
        if value is None or value == getattr(cfg.generate, key, None):
            continue
        if key == "full_vocab":
            parts += ["full-vocab"] if value else []
        elif key == "base_beams":
            parts += [f"base-beams{value}"] if value != BASE_BEAMS else []
        elif key == "loop_guard":
            parts.append("loop-guard" if value else "no-loop-guard")
        elif key in TAG_LABELS:
            parts.append(TAG_LABELS[key].format(value))
    return "".join(f"-{p}" for p in parts)


def plan(task: Task, run: str, data: str | None = None, limit: int = 0, last: int = 0,
         runs_root: str | None = None, checkpoint: str | None = None, decoding: dict | None = None) -> EvalPlan:
    """The results go to eval/<name>/: 'test' for the run's own test file, else the file's name, then -firstN or
    -lastN for part of it (--limit, --last), then the decoding settings given that differ from the run's
    (decoding_tag: -beams1, ...); a name another file's evaluation holds gets a tag of this file's path, so an
    evaluation only ever replaces one of the same file, part and decoding. checkpoint: score that checkpoint's
    weights (`runs.Run.at_checkpoint`), into eval/<name>-checkpoint-N/ beside the final weights' eval/<name>/."""
    loaded = runs.find_run(run, task.name, runs_root, train_command=task.command("train"), checkpoint=checkpoint)
    cfg = loaded.config()
    # a local file by its absolute path: the index in run.json must name the same file from whatever folder it is
    # read, and a file of the same name in another folder must not replace this one's results (a hub dataset id
    # stays as given)
    local = Path(data).expanduser() if data else None
    source = (str(local.absolute()) if local.exists() else data) if local else cfg.data.test
    if not source:
        raise ConfigError(f"run {loaded.path} names no test file (data.test); pass --data FILE")
    report = DataReport()
    rows = task.read(source, report, limit=limit, last=last, drop_duplicates=False)
    if not rows:
        raise ConfigError(f"{source}: no usable rows to evaluate")
    if report.dropped:  # rows the task cannot score (no price, out of range, empty text) are said, not hidden
        log(f"{source}: {sum(report.dropped.values())} rows not scored ({report.drops()})")
    _warn_overlap(task, cfg, source, rows)
    name = runs.eval_name(source, cfg.data.test)
    if limit or last:  # the scores of part of a file never replace those of the whole file
        name += f"-first{limit}" if limit else f"-last{last}"
    name = loaded.eval_name(name + decoding_tag(cfg, decoding or {}))
    earlier = loaded.record.evaluations.get(name)
    if earlier and not runs.same_file(earlier.get("data", ""), source):  # another file with the same name
        name = runs.path_tagged(name, source)
    return EvalPlan(loaded, cfg, source, name, rows)


def _warn_overlap(task: Task, cfg: RunConfig, source: str, rows: list[Row]) -> None:
    """Say so when rows to score are also in the run's training file (a --last N holdout of a file with repeated
    rows, a test split that shares a row with the training split): their scores flatter the model."""
    if not all(Path(s).expanduser().is_file() for s in split_sources(cfg.data.train) or [""]):
        return  # a hub dataset (not fetched again for this) or a file that has moved
    try:
        trained = task.read(cfg.data.train, DataReport(), limit=cfg.data.limit, drop_duplicates=False)
    except (ConfigError, DataError, OSError):  # the training file moved or changed: not this check's to report
        return
    if n := overlap(rows, trained):
        log(f"{source}: {n} of the {len(rows)} rows to score are also in the run's training data "
            f"({cfg.data.train}): their scores flatter the model")


ALL = "all"  # --checkpoint all: every kept checkpoint, then the final weights


def weights_to_score(task: Task, run: str, runs_root: str | None, checkpoint: str | None) -> tuple[str, list]:
    """(run folder, checkpoint specs) that evaluate's --checkpoint asks for: the one given (None: the final
    weights), or for 'all' every complete kept checkpoint, oldest first, then the final weights if the run
    finished. The folder is resolved once, so 'latest' cannot change between the evaluations."""
    if checkpoint != ALL:
        return run, [checkpoint]
    loaded = runs.find_run(run, task.name, runs_root, finished=False, train_command=task.command("train"))
    steps = [d.name.removeprefix("checkpoint-") for d in loaded.usable_checkpoints]
    if loaded.is_pissa and runs.checkpoint_folders(loaded.checkpoints_dir):
        log(f"{loaded.path} is a PiSSA run: its checkpoints fit the base as PiSSA changed it; scoring the final "
            "weights only")
    specs = [*steps, *([None] if loaded.finished else [])]
    if not specs:
        raise ConfigError(f"run {loaded.path} has no complete checkpoint and no final weights to score yet")
    return str(loaded.path), specs


def score_each(task: Task, run: str, runs_root: str | None, checkpoint: str | None, with_base: bool,
               score) -> list[dict]:
    """Run score(run, checkpoint, with_base) -> metrics for each set of weights `weights_to_score` names (the
    base model only with the first: its answers do not depend on the weights), then, for more than one, print
    their summaries side by side and plot them (eval/<name>-checkpoints.png)."""
    path, specs = weights_to_score(task, run, runs_root, checkpoint)
    results = []
    for i, spec in enumerate(specs):
        if len(specs) > 1:
            log(f"weights {i + 1}/{len(specs)}: {f'checkpoint-{spec}' if spec else 'final'}")
        results.append(score(path, spec, with_base and i == 0))
    if len(specs) > 1:
        loaded = runs.Run.load(path)
        rows = summaries(loaded, results)
        print(comparison(rows))
        name = re.sub(r"-checkpoint-[0-9]+$", "", results[-1]["eval"])
        plot = loaded.path / "eval" / f"{name}-checkpoints.png"
        plot_comparison(rows, plot, f"{loaded.path.name}: {name}")
        print(f"wrote {plot}")
    return results


def summaries(run: runs.Run, results: list[dict]) -> list[tuple[str, dict]]:
    """(weights inside the run folder, {"finetuned chrf": 21.4, ...}) per evaluation: the fine-tuned summaries
    as indexed in run.json."""
    rows = []
    for metrics in results:
        entry = run.record.evaluations.get(metrics["eval"], {})
        cells = {f"{model} {name}": value for model, scores in entry.get("summary", {}).items() if model != "base"
                 for name, value in scores.items()}
        rows.append((str(Path(metrics["weights"]).relative_to(run.path)), cells))
    return rows


def comparison(rows: list[tuple[str, dict]]) -> str:
    """`summaries` as a text table, one row per set of weights."""
    columns = list(dict.fromkeys(c for _, cells in rows for c in cells))
    widths = [max(len(c), 8) + 2 for c in columns]
    first = max(len("weights"), *(len(name) for name, _ in rows))
    lines = ["weights".ljust(first) + "".join(c.rjust(w) for c, w in zip(columns, widths))]
    for name, cells in rows:
        lines.append(name.ljust(first) + "".join(
            (f"{cells[c]:.1%}" if c.endswith("rate") else f"{cells[c]:.2f}").rjust(w) if c in cells else " " * w
            for c, w in zip(columns, widths)))
    return "\n".join(lines)


def plot_comparison(rows: list[tuple[str, dict]], path: Path, title: str = "") -> None:
    """`summaries` as lines over the weights in training order; rates on a second axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [re.sub(r"^checkpoints/checkpoint-", "", name) if "checkpoint-" in name else "final" for name, _ in rows]
    columns = list(dict.fromkeys(c for _, cells in rows for c in cells))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    right = ax.twinx() if any(c.endswith("rate") for c in columns) else None
    for c in columns:
        points = [(i, cells[c]) for i, (_, cells) in enumerate(rows) if c in cells]
        (right if c.endswith("rate") else ax).plot(*zip(*points), "s--" if c.endswith("rate") else "o-", label=c)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("checkpoint step")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize="small")
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metrics_head(plan: EvalPlan, p: Predictions) -> dict:
    """What every product's metrics.json opens with: the run, the evaluation's folder name, the weights scored,
    the test file and the decoding (the base model's too, when it was decoded)."""
    head = {"run": str(p.run.path), "eval": plan.name, "weights": str(p.run.weights_dir), "data": p.source,
            "decoding": p.decoding}
    if p.base_decoding is not None:
        head["base_decoding"] = p.base_decoding
    return head


def base_decoding_note(metrics: dict) -> str | None:
    """A line under a score table when the base model was decoded otherwise than the fine-tuned one."""
    base, tuned = metrics.get("base_decoding"), metrics.get("decoding")
    if not base or not tuned or base["num_beams"] == tuned["num_beams"]:
        return None
    how = "greedily" if base["num_beams"] <= 1 else f"with {base['num_beams']} beams"
    return (f"the base model was decoded {how} (the fine-tuned with {tuned['num_beams']}); "
            f"--base-beams {tuned['num_beams']} decodes both alike")


def predict_both(task: Task, p: EvalPlan, with_base: bool = True, extra=None, full_vocab: bool = False,
                 base_beams: int = BASE_BEAMS, **generate_overrides) -> Predictions:
    """Generate raw answers for every planned row with the fine-tuned model and (optionally) the base model,
    the base with beam search of width base_beams (1: greedy) and otherwise the same settings.

    extra: optional fn(model, tokenizer, fmt, prompts) -> anything, run with the fine-tuned model loaded, for
    a product's own decoding on the same weights (no second load)."""
    model, tokenizer, fmt, cfg = load_run(p.run, limit_vocab=not full_vocab)
    gen = dataclasses.replace(cfg.generate, **{k: v for k, v in generate_overrides.items() if v is not None})
    rows = p.rows
    prompts = [task.inference_prompt(r, fmt) for r in rows]
    budgets = [task.answer_budget(r, tokenizer) for r in rows]
    log(f"evaluating {len(rows)} rows of {p.source}")
    timings = {}
    t0 = time.time()
    tuned = generate(model, tokenizer, fmt, prompts, gen, budgets, progress="fine-tuned")
    timings["finetuned_s"] = round(time.time() - t0, 1)
    base = base_gen = None
    if with_base:
        base_gen = dataclasses.replace(gen, num_beams=base_beams)
        t0 = time.time()
        with base_model(model):
            base = generate(model, tokenizer, fmt, prompts, base_gen, budgets, progress="base")
        timings["base_s"] = round(time.time() - t0, 1)
    extra_result = None
    if extra is not None:
        t0 = time.time()
        extra_result = extra(model, tokenizer, fmt, prompts)
        timings["extra_s"] = round(time.time() - t0, 1)
    return Predictions(p.run, p.source, rows, tuned, base, dataclasses.asdict(gen), timings, cfg,
                       dataclasses.asdict(base_gen) if base_gen else None, extra_result)
