"""Run folders: where they live, what makes a folder a run, and the typed record in run.json.

A run folder holds run.json (the `RunRecord`: status, resolved config, versions, timings, loss curve,
evaluations), config.yaml, data_report.json, loss.png, adapter/ (PEFT format) or model/ (train.method full),
checkpoints/ (Hugging Face checkpoint-N folders) and eval/<name>/ per evaluated test file. run.json's "status"
is "running" until the adapter (or model) is fully written; only then does it become "completed". A command
can use a checkpoint's weights instead of the final ones (`Run.at_checkpoint`), also while the run trains: the
two processes then both rewrite run.json, each under .run.json.lock, keeping the other's part.

The project owns a folder only when its run.json carries the marker below: nothing else is ever deleted,
overwritten or moved aside. Every reader goes through `Run.load`, which turns a truncated, empty, non-UTF-8
or foreign run.json into one line naming the file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import time
from importlib import metadata
from pathlib import Path

from .config import ConfigError, RunConfig, anchor_data_paths, from_dict

LATEST = "LATEST"  # a text file in <root>/<product>/ holding the latest run's folder name
RUNS_ENV = "FT_RUNS_DIR"
DEFAULT_ROOT = "runs"
MARKER = "domain-finetune run"
SCHEMA = 1
STATUSES = ("running", "completed", "interrupted", "failed")
RECORD_LOCK = ".run.json.lock"  # held while run.json is read and rewritten (`Run.save`, `Run.write_eval`)
PISSA_START = "pissa-start"  # a PiSSA run's adapter as initialised, to convert the saved one (shared/train.py)


def runs_root(configured: str | Path | None = None) -> Path:
    """The one place that decides where runs live: the config's output.runs_root (or a command's --runs-root),
    then $FT_RUNS_DIR, then ./runs. A leading ~ is the home folder, as the shell would make it (transformers
    expands it in the checkpoints' path; a folder literally named ~ would split a run in two)."""
    return Path(configured or os.environ.get(RUNS_ENV) or DEFAULT_ROOT).expanduser()


# ---------------------------------------------------------------- files

def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    _replace(tmp, path)


def _replace(tmp: Path, path: Path) -> None:
    """os.replace, leaving no temporary file behind where it fails (the target is a folder, say)."""
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: str | Path, what: str = "file") -> dict:
    """A JSON object from a file the project wrote; anything else is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {e.start}); it was not written by this "
                          "project or is damaged") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what} ({e.strerror})") from None
    if not text.strip():
        raise ConfigError(f"{path}: {what} is empty (the run stopped while writing it, or it was truncated)")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise ConfigError(f"{path}: {what} is not valid JSON{where}; it is damaged or was cut short") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: {what} holds a JSON {type(obj).__name__}, not an object")
    return obj


def read_jsonl(path: Path) -> list[dict]:
    """The JSON object on each non-empty line of a file this project wrote; a damaged line names itself."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise ConfigError(f"{path}, line {n}: not valid JSON") from None
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    _replace(tmp, path)


def existing_ancestor(path: Path) -> Path:
    """The nearest folder (or file) on the way up from path that exists: where path would be made."""
    while not path.exists():
        path = path.parent
    return path


def contains(outer: Path, inner: Path) -> bool:
    """True when inner is outer or lies inside it (symbolic links resolved)."""
    outer, inner = Path(outer).resolve(), Path(inner).resolve()
    return inner == outer or outer in inner.parents


def check_apart(target: Path, keep: Path, what: str, kept: str) -> None:
    """Refuse to delete or replace `target` when it holds `keep` or lies inside it (both directions)."""
    if contains(target, keep):
        raise ConfigError(f"{what} {target} contains {kept} {keep}; replacing it would delete that. "
                          "Pick another folder.")
    if contains(keep, target):
        raise ConfigError(f"{what} {target} is inside {kept} {keep}; pick a folder outside it.")


# ---------------------------------------------------------------- processes (accelerate launch)

def process_rank() -> tuple[int, int]:
    """(rank, number of processes) as `accelerate launch` / torchrun set them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def process_count() -> int:
    return process_rank()[1]


def is_main_process() -> bool:
    """True for the one process that writes the run folder (rank 0, or the only process)."""
    return process_rank()[0] == 0


def same_on_all_processes(value):
    """Under several processes, return rank 0's `value` on every process (alone: `value` itself).

    Sets up the process group now (through accelerate's PartialState, as the Trainer would); the Trainer
    finds it initialized and reuses it."""
    if process_count() <= 1:
        return value
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # as train.sft_config's use_cpu: gloo on CPUs
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


# ---------------------------------------------------------------- the record

@dataclasses.dataclass
class RunRecord:
    """What run.json holds. Written by training and evaluation only, through `Run.save`."""
    product: str
    config: dict
    commands: dict  # verb -> command line prefix, from the product's task (the core knows no product)
    status: str = "running"
    profile: str = ""
    profile_reason: str = ""
    chat_format: str = ""
    base_model: dict | None = None  # models.fingerprint: load_run refuses the adapter on another base
    versions: dict = dataclasses.field(default_factory=dict)
    started: str = ""
    finished: str | None = None
    timings: dict = dataclasses.field(default_factory=dict)
    data: dict = dataclasses.field(default_factory=dict)
    parameters: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    loss_curve: list = dataclasses.field(default_factory=list)
    eval_loss: float | None = None
    resumed_from: str | None = None
    history: list = dataclasses.field(default_factory=list)
    evaluations: dict = dataclasses.field(default_factory=dict)  # name -> {data, folder, written, summary}
    error: str | None = None
    format: str = MARKER
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, obj: dict, path: Path) -> "RunRecord":
        if obj.get("format") != MARKER:
            raise ConfigError(f"{path}: not a run record of this project (no \"format\": \"{MARKER}\")")
        if obj.get("schema") != SCHEMA:
            raise ConfigError(f"{path}: run record schema {obj.get('schema')!r}; this version reads {SCHEMA}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n, f in known.items() if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and n not in obj]
        if missing:
            raise ConfigError(f"{path}: run record has no '{missing[0]}'; it is damaged")
        record = cls(**{k: v for k, v in obj.items() if k in known})
        for name, kind in (("config", dict), ("commands", dict), ("evaluations", dict), ("history", list)):
            if not isinstance(getattr(record, name), kind):
                raise ConfigError(f"{path}: run record field '{name}' is not a {kind.__name__}; it is damaged")
        for name, entry in record.evaluations.items():
            if not isinstance(entry, dict):  # read with .get() by the demos and evaluate
                raise ConfigError(f"{path}: run record evaluation '{name}' is not a mapping ({entry!r}); it is "
                                  f"damaged. Delete that entry, or evaluate again to rewrite it")
        if record.status not in STATUSES:
            raise ConfigError(f"{path}: run record status {record.status!r} is not one of {', '.join(STATUSES)}")
        return record


class Run:
    """A run folder and its record. `Run.load` for an existing one, `Run.create` for a new one."""

    def __init__(self, path: str | Path, record: RunRecord, checkpoint: Path | None = None):
        self.path = Path(path)
        self.record = record
        self.checkpoint = checkpoint  # a checkpoint folder whose weights stand in for the final ones

    # -- finding and loading
    @staticmethod
    def is_run(path: Path) -> bool:
        """A folder is a run only if its run.json carries this project's marker."""
        try:
            return read_json(Path(path) / "run.json").get("format") == MARKER
        except ConfigError:
            return False

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"run folder {path} does not exist" if not path.exists()
                              else f"{path} is a file, not a run folder")
        record_path = path / "run.json"
        if not record_path.exists():
            raise ConfigError(f"{path} is not a run folder (no run.json)")
        return cls(path, RunRecord.from_json(read_json(record_path, "run record"), record_path))

    @classmethod
    def create(cls, path: Path, product: str, config: dict, commands: dict, **fields) -> "Run":
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, RunRecord(product=product, config=config, commands=commands,
                                   started=time.strftime("%Y-%m-%d %H:%M:%S"), **fields))

    def save(self) -> None:
        """Write run.json. Training rewrites it at every log line while `evaluate --checkpoint` may index an
        evaluation in it: entries indexed by another process are kept while their eval/ folder exists."""
        with self._record_lock():
            on_disk = self._read_back()
            for name, entry in (on_disk.evaluations if on_disk else {}).items():
                if name not in self.record.evaluations and self.eval_dir(name).is_dir():
                    self.record.evaluations[name] = entry
            write_json(self.path / "run.json", dataclasses.asdict(self.record))

    @contextlib.contextmanager
    def _record_lock(self):
        """One writer of run.json at a time, across processes (flock on a small file beside it)."""
        fd = os.open(self.path / RECORD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_back(self) -> RunRecord | None:
        """The record as on disk now, or None when there is none or it does not read."""
        try:
            return RunRecord.from_json(read_json(self.path / "run.json"), self.path / "run.json")
        except ConfigError:
            return None

    # -- what the folder holds
    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def is_full(self) -> bool:
        """Trained with train.method = full: the weights are a model folder, not an adapter."""
        return (self.record.config.get("train") or {}).get("method") == "full"

    @property
    def weights_dir(self) -> Path:
        """What training produced: adapter/ (PEFT adapter) or model/ (a transformers model, shared/full.py), or
        the checkpoint folder chosen with `at_checkpoint`."""
        if self.checkpoint is not None:
            return self.checkpoint
        return self.path / "model" if self.is_full else self.adapter_dir

    @property
    def weights_name(self) -> str:
        """weights_dir inside the run folder, as run.json and export.json record it (e.g. checkpoints/checkpoint-2)."""
        return str(self.weights_dir.relative_to(self.path))

    @property
    def weights_home(self) -> Path:
        """Where files fitted on the weights live (the run folder, or the chosen checkpoint's folder)."""
        return self.checkpoint if self.checkpoint is not None else self.path

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def finished(self) -> bool:
        marker = "config.json" if self.is_full else "adapter_config.json"
        return (self.weights_dir / marker).is_file() and self.record.status == "completed"

    @property
    def is_pissa(self) -> bool:
        """A PiSSA run: its checkpoints fit the base as PiSSA changed it, only its final adapter the original."""
        return (self.path / PISSA_START).is_dir()

    @property
    def usable_checkpoints(self) -> list[Path]:
        """The complete checkpoints whose weights can stand in for the final ones, oldest first (none for a PiSSA
        run)."""
        if self.is_pissa:
            return []
        return [d for d in checkpoint_folders(self.checkpoints_dir) if is_complete_checkpoint(d)]

    def at_checkpoint(self, spec: str | int) -> "Run":
        """This run with the weights of one of its checkpoints in place of the final ones: a step (`1200`),
        a folder name (`checkpoint-1200`) or `last` (the newest complete one). The run need not be finished:
        a checkpoint of a run still training, or stopped, can be scored."""
        saved = checkpoint_folders(self.checkpoints_dir)
        spec = str(spec).strip()
        if spec == "last":
            folder = next((d for d in reversed(saved) if is_complete_checkpoint(d)), None)
            if folder is None:
                raise ConfigError(f"run {self.path} has no complete checkpoint in {self.checkpoints_dir}")
        else:
            step = spec.removeprefix("checkpoint-")
            if not (step.isascii() and step.isdigit()):  # "²" is a digit to isdigit(), not to int()
                raise ConfigError(f"--checkpoint {spec!r}: give a step (e.g. 1200), checkpoint-STEP or 'last' "
                                  "(only evaluate takes 'all')")
            folder = self.checkpoints_dir / f"checkpoint-{int(step)}"
            if folder not in saved:
                have = ", ".join(d.name.removeprefix("checkpoint-") for d in saved) or "none"
                raise ConfigError(f"run {self.path} has no checkpoint at step {int(step)} (saved steps: "
                                  f"{have}; train.save_total_limit decides how many are kept)")
            if not is_complete_checkpoint(folder):
                raise ConfigError(f"{folder} is incomplete: training is writing it, or stopped while writing it")
        if self.is_pissa:
            raise ConfigError(f"{folder} is a PiSSA checkpoint: it fits the base as PiSSA changed it, not the "
                              f"original base. Score the run's finished adapter instead ({self.adapter_dir})")
        return Run(self.path, self.record, folder)

    def in_training(self) -> bool:
        """A training holds the run's folder lock (RunLock) now."""
        try:
            with RunLock(self.path):
                return False
        except ConfigError:
            return True

    def eval_name(self, name: str) -> str:
        """The evaluation folder name of these weights: `name` for the final ones, name-checkpoint-N for a
        checkpoint's, so both sit side by side."""
        return name if self.checkpoint is None else f"{name}-{self.checkpoint.name}"

    def config(self) -> RunConfig:
        """The run's resolved config (data paths anchored as when it was trained)."""
        try:
            return anchor_data_paths(from_dict(self.record.config))
        except ConfigError as e:
            raise ConfigError(f"{self.path / 'run.json'}: {e}") from None

    def command(self, verb: str) -> str:
        """A command line of the run's product (stored at training time), e.g. command("train")."""
        return self.record.commands.get(verb, f"<{self.record.product} {verb} command>")

    def require(self, product: str | None = None, finished: bool = True) -> "Run":
        """This run, checked for the command using it: the right product, and (finished) a complete adapter."""
        if product and self.record.product != product:
            raise ConfigError(f"{self.path} is a {self.record.product} run, not a {product} run; "
                              f"pass a {product} run with --run")
        if finished and not self.finished:
            if self.record.status == "running" and self.in_training():
                raise ConfigError(f"run {self.path} is still training, so it has no {self.weights_dir.name} yet: "
                                  "wait for it to end, or use its newest checkpoint with --checkpoint last")
            raise ConfigError(f"run {self.path} has no finished {self.weights_dir.name} (status: "
                              f"{self.record.status}). Resume it: {self.command('train')} --output-dir "
                              f"{shlex.quote(str(self.path))} --resume")
        return self

    # -- evaluations, kept side by side
    def eval_dir(self, name: str) -> Path:
        return self.path / "eval" / name

    def write_eval(self, name: str, source: str, metrics: dict, predictions: list[dict],
                   summary: dict | None = None) -> Path:
        """Write eval/<name>/metrics.json and predictions.jsonl (each atomically) and index them in run.json.
        An earlier evaluation there with scores this one lacks (the base model's, before --no-base) is moved
        aside to eval/<name>.replaced-TIME/ rather than lose them."""
        out = self.eval_dir(name)
        try:
            earlier = read_json(out / "metrics.json", "evaluation metrics") if (out / "metrics.json").is_file() else {}
            lost = sorted(set(earlier) - set(metrics)) if isinstance(earlier, dict) else ["all"]
        except ConfigError:
            lost = ["unreadable"]
        if lost:
            aside = aside_path(out)
            os.rename(out, aside)
            from .log import log
            log(f"eval/{name} held scores this evaluation does not compute ({', '.join(lost)}): moved to {aside}")
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "predictions.jsonl", predictions)
        write_json(out / "metrics.json", metrics)
        entry = {"data": str(source), "folder": f"eval/{name}", "weights": self.weights_name,
                 "written": time.strftime("%Y-%m-%d %H:%M:%S"), "summary": summary or {}}
        with self._record_lock():
            # the record as on disk now: a training that went on (or finished) meanwhile keeps its status and curve
            self.record = self._read_back() or self.record
            self.record.evaluations[name] = entry
            write_json(self.path / "run.json", dataclasses.asdict(self.record))
        return out

    def read_eval(self, name: str) -> tuple[dict | None, list[dict]]:
        """(metrics or None, prediction rows) of one evaluation; a missing one is not an error."""
        out = self.eval_dir(name)
        metrics = read_json(out / "metrics.json", "evaluation metrics") if (out / "metrics.json").is_file() else None
        rows = read_jsonl(out / "predictions.jsonl") if (out / "predictions.jsonl").is_file() else []
        return metrics, rows


def checkpoint_folders(folder: Path) -> list[Path]:
    """The Trainer's checkpoint-N folders in `folder`, the oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in folder.iterdir()
             if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name))]
    return [d for _, d in sorted(found)]


def is_complete_checkpoint(folder: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint without a readable one is being written, or was
    cut short by a kill."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def eval_name(source: str, default_test: str = "") -> str:
    """The folder name of an evaluation: 'test' for the run's own test file, else the file's stem (made safe;
    another file named test.jsonl gets a tag of its path, since 'test' is the run's own)."""
    if default_test and same_file(source, default_test):
        return "test"
    stem = Path(source).name
    for suffix in (".jsonl", ".json", ".csv", ".tsv", ".txt"):
        stem = stem.removesuffix(suffix)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:60].strip(".-") or "data"
    return path_tagged(stem, source) if stem == "test" else stem


def same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def path_tagged(name: str, source: str | Path) -> str:
    """name-<6 hex digits of the file's absolute path>: one name per file, for files that share a stem."""
    return f"{name}-{hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:6]}"


# ---------------------------------------------------------------- where runs are, and which is latest

def product_dir(root: Path, product: str) -> Path:
    return Path(root) / product


def new_run_dir(root: str | Path, product: str, model_name: str) -> Path:
    """A new, unused folder name under root/product. Under several processes rank 0 picks it and the
    others take rank 0's choice, so one launch writes one run folder (clocks and the exists() check would
    otherwise differ between processes)."""
    path = None
    if is_main_process():
        base = product_dir(Path(root), product)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model_name).name)[:40]
        path = base / f"{stamp}-{safe}"
        n = 1
        while path.exists():
            n += 1
            path = base / f"{stamp}-{safe}-{n}"
    return same_on_all_processes(path)


def mark_latest(run: Run, root: Path) -> None:
    """Point root/<product>/LATEST at the run, only when the run lives there: a run elsewhere (--output-dir)
    never writes outside its own folder."""
    base = product_dir(root, run.record.product)
    if run.path.parent.resolve() == base.resolve():
        (base / LATEST).write_text(run.path.name + "\n", encoding="utf-8")


def latest_run(root: str | Path, product: str) -> Path | None:
    pointer = product_dir(Path(root), product) / LATEST
    if pointer.is_file():
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        path = pointer.parent / name
        if name and "/" not in name and path.is_dir():
            return path
    return None


def find_run(spec: str, product: str | None, root: str | Path | None = None, finished: bool = True,
             train_command: str = "", checkpoint: str | None = None) -> Run:
    """Resolve --run DIR, or 'latest', to a loaded run of this product (any product for a DIR when product is
    None) with a finished adapter, or to one of its checkpoints (`Run.at_checkpoint`; the run need not be
    finished then)."""
    root = runs_root(root)
    if spec in ("", "latest"):
        path = latest_run(root, product)
        if path is None:
            hint = f" Train one first: {train_command}" if train_command else ""
            if (product_dir(root, product) / LATEST).is_file():
                hint = f" ({LATEST} names a run that is gone: pass --run DIR of another){hint}"
            raise ConfigError(f"no {product} run found under {product_dir(root, product)}/ (runs root: {root}; "
                              f"set --runs-root or {RUNS_ENV} if it is elsewhere).{hint}")
    else:
        path = Path(spec).expanduser()
    run = Run.load(path).require(product, finished=finished and checkpoint is None)
    return run if checkpoint is None else run.at_checkpoint(checkpoint)


def finished_runs(root: Path, product: str, checkpoints: bool = False) -> list[Path]:
    """The folders of `usable_runs`."""
    return [run.path for run in usable_runs(root, product, checkpoints)]


def usable_runs(root: Path, product: str, checkpoints: bool = False) -> list[Run]:
    """Finished runs of a product, the 'latest' one first, then newest first; broken ones skipped.
    checkpoints: also runs still training or stopped that kept a usable checkpoint (`Run.usable_checkpoints`)."""
    base = product_dir(root, product)
    if not base.is_dir():
        return []
    done = []
    for p in base.iterdir():
        try:
            run = Run.load(p)
        except ConfigError:
            continue
        if run.record.product == product and (run.finished or checkpoints and bool(run.usable_checkpoints)):
            done.append(run)
    done.sort(key=lambda run: (run.path / "run.json").stat().st_mtime, reverse=True)
    latest = latest_run(root, product)
    return sorted(done, key=lambda run: run.path != latest)  # stable: the latest first, the rest as they were


# ---------------------------------------------------------------- owning a folder for training

class RunLock:
    """An exclusive lock on a run folder for the duration of a training: a second training into the same
    folder stops at once instead of mixing checkpoints. The lock is taken on the folder itself (flock on its
    descriptor), so checking it writes nothing, and the kernel drops it when the process dies."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"run folder {self.path} is in use by another training; wait for it to end, or "
                              "pick another --output-dir") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def claim(path: Path, product: str, resume: bool, overwrite: bool, commands: dict) -> Run | None:
    """Decide what training may do with `path`, before anything loads. Returns the existing run to resume,
    or None for a fresh run. Never deletes or moves: with --overwrite the caller moves the old run aside
    (move_aside) once the new one is ready to write, so a run refused later is left where it was."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output folder {path} exists and is not a folder")
    empty = not path.exists() or not any(path.iterdir())
    if empty:
        if resume:
            raise ConfigError(f"--resume: {path} holds no run to resume; drop --resume to start a new run there")
        return None
    if not (path / "run.json").exists():
        raise ConfigError(f"output folder {path} is not empty and is not a run of this project (no run.json); "
                          "nothing in it was touched. Pick a new or empty --output-dir.")
    run = Run.load(path)
    with RunLock(path):  # refused now, before the model loads, if another training holds the folder
        pass
    if run.record.product != product:
        raise ConfigError(f"{path} is a {run.record.product} run, not a {product} run; pick another --output-dir")
    if resume:
        return run
    if not overwrite:
        state = "finished" if run.record.status == "completed" else f"{run.record.status}, not finished"
        raise ConfigError(f"{path} is a {state} run. Continue it with --resume, train into a new --output-dir, "
                          "or pass --overwrite to move the old run aside (it is renamed, not deleted)")
    return None


def aside_path(path: Path) -> Path:
    """A free name beside `path` for what it holds now: NAME.replaced-TIME (then -2, -3, ...)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.replaced-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    return aside


def move_aside(path: Path) -> Path:
    """Rename the run in `path` beside it (aside_path), under its lock; returns the new path."""
    path = Path(path)
    aside = aside_path(path)
    with RunLock(path):
        os.rename(path, aside)
    from .log import log
    log(f"--overwrite: the old run was moved aside to {aside}")
    return aside


def versions() -> dict:
    out = {}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "sacrebleu",
                "unsloth"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    import platform
    out["python"] = platform.python_version()
    return out
