"""What both Streamlit demos share: picking a run, loading it once per process, guarding one copy of the
weights between sessions, and checking what the user typed.

The page scripts (apps/*/demo.py) hold only their product's layout. Everything here except `page_*` works
without Streamlit, so it is unit-tested directly; the pages are tested with Streamlit's AppTest and in a
real browser (tests/test_demos.py).
"""
from __future__ import annotations

import dataclasses
import shlex
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from . import runs
from .config import ConfigError, GenerateSettings

# What `python -m apps.<product>.demo` passes to `streamlit run`: loopback only and no usage statistics, wherever
# it is started from (a .streamlit/config.toml is read only from the folder streamlit starts in).
SAFE_FLAGS = ("--server.address", "127.0.0.1", "--browser.serverAddress", "127.0.0.1",
              "--browser.gatherUsageStats", "false", "--server.headless", "true")


def in_streamlit() -> bool:
    """True while Streamlit runs this page (a server or AppTest); False under `python -m apps.<product>.demo`."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return False
    return get_script_run_ctx(suppress_warning=True) is not None


def launch(page_file: str, argv: list[str] | None = None) -> None:
    """`python -m apps.<product>.demo [streamlit options]`: run the page with streamlit, on loopback only."""
    import sys

    from streamlit.web import cli

    sys.argv = ["streamlit", "run", page_file, *SAFE_FLAGS, *(sys.argv[1:] if argv is None else argv)]
    sys.exit(cli.main())


def exposure_problem() -> str | None:
    """Why this server should not serve the page, or None: it listens on every interface, or sends usage
    statistics, without anyone having asked for it (started with plain `streamlit run` outside the repository
    root, where no config file sets either)."""
    from streamlit import config

    if not config.get_option("server.address") and not config.is_manually_set("server.address"):
        return "listens on every network interface"
    if config.get_option("browser.gatherUsageStats") and not config.is_manually_set("browser.gatherUsageStats"):
        return "sends usage statistics"
    return None


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


def load(run_dir: str | Path, checkpoint: str | None = None, version: str = "") -> LoadedRun:
    """A run's final weights, or (checkpoint: a folder name or step) one of its checkpoints' weights.

    version: not read here; part of the cache key (`start_page`), so that a run trained again in the same
    folder (--overwrite, --resume) is loaded afresh instead of served from the cache."""
    from .generate import load_run

    run = runs.Run.load(run_dir)
    model, tokenizer, fmt, cfg = load_run(run.at_checkpoint(checkpoint) if checkpoint else run)
    return LoadedRun(Path(run_dir), model, tokenizer, fmt, cfg)


def decoding(base: GenerateSettings, sample: bool, temperature: float, top_p: float, top_k: int,
             max_new_tokens: int, num_beams: int = 1) -> GenerateSettings:
    """The run's generation settings with the sidebar's choices applied (num_beams > 1: beam search, whose
    answer `stream_answer` gives in one piece)."""
    return dataclasses.replace(base, do_sample=sample, temperature=temperature, top_p=top_p, top_k=top_k,
                               max_new_tokens=max_new_tokens, num_beams=num_beams)


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
    # Bytes that are not UTF-8 reach Python (stdin, argv) as surrogates, which the tokenizer rejects
    bad = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
    if bad is not None:
        return CheckedText(text, f"The {what} is not valid UTF-8 (byte 0x{ord(text[bad]) - 0xdc00:02x} at character "
                                 f"{bad + 1}); give it as UTF-8.")
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


def page_no_run(product: str, root: Path, train_command: str) -> None:
    """The page shown when no finished run exists: what is missing and the exact command to make one."""
    import streamlit as st

    st.warning(f"No finished {product.replace('_', ' ')} run under `{root / product}`.")
    st.markdown("Train one (a few minutes on a CPU with the default settings), then reload this page:")
    st.code(f"{train_command}\n{train_command.rsplit('.', 1)[0]}.evaluate --run latest", language="bash")
    st.caption(f"The demo looks for runs in `{root}` (set {runs.RUNS_ENV} to look elsewhere).")
    st.stop()


_cached_load = None


def serve(page) -> None:
    """Run a page function; any error shows as one line on the page (and its traceback in the server's log),
    never as a traceback box. Streamlit's own stop/rerun signals pass through."""
    import logging

    import streamlit as st

    from .data import DataError

    try:
        page()
    except (ConfigError, DataError) as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - the page boundary: nothing reaches the user as a traceback
        logging.getLogger("shared.demo").exception("demo page failed")
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else "no message"
        st.error(f"Something went wrong: {e.__class__.__name__}: {first}. The server's log has the details.")


def start_page(task, title: str, icon: str) -> tuple[runs.Run, LoadedRun]:
    """Page set-up both demos share: title, the exposure check, the run picker, and the run's model loaded once
    per server process (st.cache_resource: every session and rerun gets the same copy)."""
    import streamlit as st

    global _cached_load
    if _cached_load is None:
        # Two entries: the weights in use and the ones picked before, so flipping between a run's final weights
        # and a checkpoint does not reload, while browsing many checkpoints keeps at most two copies in memory.
        _cached_load = st.cache_resource(show_spinner="Loading the model (once per process)…",
                                         max_entries=2)(load)
    st.set_page_config(page_title=title, page_icon=icon, layout="wide")
    st.title(title)
    problem = exposure_problem()
    if problem:
        st.error(f"This server {problem}, because it was started without the demo's settings. Start it with "
                 f"`{task.command('demo')}` (loopback only, no statistics), or pass --server.address and "
                 "--browser.gatherUsageStats to `streamlit run` to choose yourself.")
        st.stop()
    run = pick_weights(pick_run(task))
    version = f"{run.record.started}|{run.record.finished}"
    return run, _cached_load(str(run.path), run.checkpoint.name if run.checkpoint is not None else None, version)


def pick_run(task) -> runs.Run:
    """Sidebar choice of run folder (default: the latest run); stops with the 'no run' page when there is none."""
    import streamlit as st

    root = runs.runs_root()
    choices = {run.path.name: run for run in runs.usable_runs(root, task.name, checkpoints=True)}
    if not choices:
        page_no_run(task.name, root, task.command("train"))
    name = st.sidebar.selectbox("Run", list(choices), index=0,
                                format_func=lambda n: n if choices[n].finished else f"{n} ({_state(choices[n])}: "
                                                                                    "checkpoints)",
                                help=f"finished runs under {root / task.name}, and those still training or "
                                     "stopped that kept a checkpoint")
    return choices[name]


FINAL = "final"


def weight_choices(run: runs.Run) -> list[str]:
    """What the Weights picker offers: the run's final weights when it finished, then its usable checkpoints,
    newest first (`runs.Run.usable_checkpoints`)."""
    return [*([FINAL] if run.finished else []), *reversed([d.name for d in run.usable_checkpoints])]


def pick_weights(run: runs.Run) -> runs.Run:
    """Sidebar choice between the run's final weights and its checkpoints (shown only when it kept some)."""
    import streamlit as st

    choices = weight_choices(run)
    if choices == [FINAL]:
        return run
    if len(choices) == 1:  # a run still training or stopped, with one checkpoint
        return run.at_checkpoint(choices[0])
    name = st.sidebar.selectbox("Weights", choices, index=0,
                                help=f"the run's final {run.weights_dir.name}, or a checkpoint the training kept "
                                     f"in {run.checkpoints_dir}")
    return run if name == FINAL else run.at_checkpoint(name)


def evaluate_command(run: runs.Run) -> str:
    """The command that scores the weights in use (a checkpoint's with --checkpoint)."""
    picked = f" --checkpoint {run.checkpoint.name.removeprefix('checkpoint-')}" if run.checkpoint is not None else ""
    return f"{run.command('evaluate')} --run {shlex.quote(str(run.path))}{picked}"


def _state(run: runs.Run) -> str:
    """A run without its final weights: 'running' only while a training holds it (a killed one still says
    running in run.json)."""
    status = run.record.status
    return "stopped" if status == "running" and not run.in_training() else status


def pick_eval(run: runs.Run) -> tuple[str | None, dict | None, list[dict]]:
    """Sidebar choice among the run's evaluations (those of the weights in use first, then the run's own test
    file first): (name, metrics, rows)."""
    import streamlit as st

    final = runs.Run(run.path, run.record).weights_name

    def other_weights(name: str) -> bool:  # entries written before weights were recorded are the final weights'
        return run.record.evaluations[name].get("weights", final) != run.weights_name

    try:
        own_test = run.config().data.test
    except ConfigError:  # a config this version cannot read: its evaluations are still listed
        own_test = ""

    def of_other_file(name: str) -> bool:  # test-first3-beams1 is the run's own test file too
        data = run.record.evaluations[name].get("data", "")
        return not (own_test and data and runs.same_file(data, own_test))

    names = sorted((n for n in run.record.evaluations if run.eval_dir(n).is_dir()),  # not one whose folder is gone
                   key=lambda n: (other_weights(n), of_other_file(n), n))
    if not names:
        return None, None, []
    if other_weights(names[0]):
        st.sidebar.caption(f"No evaluation of `{run.weights_name}` yet: `{evaluate_command(run)}`")
    name = st.sidebar.selectbox("Evaluation", names, index=0,
                                format_func=lambda n: f"{n} ({run.record.evaluations[n].get('data', '')})",
                                help="the test file whose scores and predictions are shown")
    try:
        return (name, *run.read_eval(name))
    except ConfigError as e:  # a damaged evaluation: said here, and the page's model stays usable
        st.sidebar.error(f"{e}. Evaluate again to replace it: `{evaluate_command(run)}`")
        return name, None, []
