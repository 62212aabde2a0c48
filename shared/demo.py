"""What both Streamlit demos share: picking a run, loading it once per process, guarding one copy of the
weights between sessions, and checking what the user typed.

The page scripts (apps/*/demo.py) hold only their product's layout. Everything here except `page_*` works
without Streamlit, so it is unit-tested directly; the pages are tested with Streamlit's AppTest and in a
real browser (tests/test_demos.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from . import runs
from .config import GenerateSettings

RUNS_ENV = "FT_RUNS_DIR"  # where the demos look for runs (default: ./runs, as the training commands write)


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV) or "runs")


def finished_runs(root: Path, product: str) -> list[Path]:
    """Run folders of a product with a finished adapter, the 'latest' one first, then newest first."""
    base = root / product
    if not base.is_dir():
        return []
    done = [p for p in base.iterdir() if (p / "adapter" / "adapter_config.json").is_file()
            and (p / "run.json").is_file()]
    done.sort(key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)
    latest = runs.latest_run(root, product)
    if latest is not None and latest in done:
        done.remove(latest)
        done.insert(0, latest)
    return done


def read_eval(run_dir: Path) -> tuple[dict | None, list[dict]]:
    """(eval/metrics.json or None, eval/predictions.jsonl rows) of a run; missing files are not an error."""
    out = run_dir / "eval"
    metrics = runs.read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
    rows = []
    if (out / "predictions.jsonl").is_file():
        with (out / "predictions.jsonl").open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return metrics, rows


@dataclasses.dataclass
class LoadedRun:
    """A run loaded for inference. `lock` serialises generation: base outputs are made by switching the adapter
    off on the shared copy, so two sessions must never generate at the same time or one would get the other's
    model."""
    run_dir: Path
    model: object
    tokenizer: object
    fmt: object
    cfg: object
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def load(run_dir: str | Path) -> LoadedRun:
    from .generate import load_run

    model, tokenizer, fmt, cfg = load_run(run_dir)
    return LoadedRun(Path(run_dir), model, tokenizer, fmt, cfg)


def decoding(base: GenerateSettings, sample: bool, temperature: float, top_p: float, top_k: int,
             max_new_tokens: int) -> GenerateSettings:
    """The run's generation settings with the sidebar's choices applied."""
    return dataclasses.replace(base, do_sample=sample, temperature=temperature, top_p=top_p, top_k=top_k,
                               max_new_tokens=max_new_tokens)


def stream_answer(loaded: LoadedRun, prompt: str, gen: GenerateSettings, use_base: bool,
                  max_new_tokens: int | None = None, seed: int | None = None,
                  first_line_only: bool = False) -> Iterator[str]:
    """Stream one answer under the run's lock, from the fine-tuned model or (adapter off) the base model.

    The underlying stream is always consumed to the end (stopping early leaves the generating thread blocked);
    with first_line_only the pieces after the first line break are generated but not shown, as the evaluation
    keeps only the first line."""
    import torch

    from .generate import first_line, stream

    with loaded.lock, _model(loaded, use_base) as model:
        if seed is not None:
            torch.manual_seed(seed)
        pieces = stream(model, loaded.tokenizer, loaded.fmt, prompt, gen, max_new_tokens)
        for piece in first_line(pieces) if first_line_only else pieces:
            if piece:
                yield piece


def generate_answer(loaded: LoadedRun, prompt: str, gen: GenerateSettings, use_base: bool,
                    max_new_tokens: int | None = None) -> str:
    """One complete answer under the run's lock (for short answers such as a price)."""
    from .generate import generate

    with loaded.lock, _model(loaded, use_base) as model:
        return generate(model, loaded.tokenizer, loaded.fmt, [prompt], gen, [max_new_tokens])[0]


def _model(loaded: LoadedRun, use_base: bool):
    """The fine-tuned model, or (use_base) the same weights with the adapter switched off; a context manager."""
    import contextlib

    from .generate import base_model

    return base_model(loaded.model) if use_base else contextlib.nullcontext(loaded.model)


@dataclasses.dataclass
class CheckedText:
    text: str
    error: str | None = None      # shown instead of running the model
    notes: list[str] = dataclasses.field(default_factory=list)  # shown next to the output


def latin_share(text: str) -> float:
    """Share of letters that are Latin script (1.0 when there are no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for c in letters if "LATIN" in unicodedata.name(c, ""))
    return latin / len(letters)


def check_text(text: str | None, what: str, max_chars: int, required: bool = True,
               english_only: bool = False) -> CheckedText:
    """Empty input is an error when required; text over max_chars is cut on a word boundary with a visible
    note; mostly non-Latin text is an error (english_only) or a note."""
    text = " ".join((text or "").split())
    if not text:
        return CheckedText("", f"Enter the {what}." if required else None)
    checked = CheckedText(text)
    if len(text) > max_chars:
        cut = text[:max_chars]
        cut = cut[:cut.rfind(" ")] if " " in cut[max_chars // 2:] else cut
        checked.text = cut
        checked.notes.append(f"The {what} was {len(text):,} characters long; only the first {len(cut):,} "
                             f"were used.")
    if latin_share(checked.text) < 0.5:
        message = (f"The {what} does not look like English (most letters are not Latin script). "
                   "The model was fine-tuned on English input.")
        if english_only:
            checked.error = message + " Enter English text."
        else:
            checked.notes.append(message + " Treat the answer with care.")
    return checked


def page_no_run(product: str, root: Path) -> None:
    """The page shown when no finished run exists: what is missing and the exact command to make one."""
    import streamlit as st

    st.warning(f"No finished {product.replace('_', ' ')} run under `{root / product}`.")
    st.markdown("Train one (a few minutes on a CPU with the default settings), then reload this page:")
    st.code(f"python -m apps.{product}.train\npython -m apps.{product}.evaluate --run latest", language="bash")
    st.caption(f"The demo looks for runs in `{root}` (set {RUNS_ENV} to look elsewhere).")
    st.stop()


_cached_load = None


def start_page(product: str, title: str, icon: str) -> tuple[Path, LoadedRun]:
    """Page set-up both demos share: title, the run picker, and the run's model loaded once per server
    process (st.cache_resource: every session and rerun gets the same copy)."""
    import streamlit as st

    global _cached_load
    if _cached_load is None:
        _cached_load = st.cache_resource(show_spinner="Loading the model (once per process)…")(load)
    st.set_page_config(page_title=title, page_icon=icon, layout="wide")
    st.title(title)
    run_dir = pick_run(product)
    return run_dir, _cached_load(str(run_dir))


def pick_run(product: str) -> Path:
    """Sidebar choice of run folder (default: the latest run); stops with the 'no run' page when there is none."""
    import streamlit as st

    root = runs_root()
    choices = finished_runs(root, product)
    if not choices:
        page_no_run(product, root)
    names = [p.name for p in choices]
    name = st.sidebar.selectbox("Run", names, index=0, help=f"finished runs under {root / product}")
    return choices[names.index(name)]
