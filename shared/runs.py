"""Run folders: creation, the 'latest' pointer, atomic writes and the status field in run.json.

A run folder holds run.json (status, resolved config, versions, timings, loss curve), config.yaml,
data_report.json, loss.png, adapter/ (PEFT format) and checkpoints/ (Hugging Face checkpoint-N folders).
run.json's "status" is "running" until the adapter is fully written; only then does it become "completed".
"""
from __future__ import annotations

import json
import os
import re
import time
from importlib import metadata
from pathlib import Path

from .config import ConfigError

LATEST = "LATEST"  # a text file in runs/<product>/ holding the latest run's folder name


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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


def new_run_dir(runs_root: str | Path, product: str, model_name: str) -> Path:
    """A new, unused folder name under runs_root/product. Under several processes rank 0 picks it and the
    others take rank 0's choice, so one launch writes one run folder (clocks and the exists() check would
    otherwise differ between processes)."""
    path = None
    if is_main_process():
        base = Path(runs_root) / product
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model_name).name)[:40]
        path = base / f"{stamp}-{safe}"
        n = 1
        while path.exists():
            n += 1
            path = base / f"{stamp}-{safe}-{n}"
    return same_on_all_processes(path)


def mark_latest(run_dir: Path) -> None:
    (run_dir.parent / LATEST).write_text(run_dir.name + "\n", encoding="utf-8")


def latest_run(runs_root: str | Path, product: str) -> Path | None:
    pointer = Path(runs_root) / product / LATEST
    if pointer.is_file():
        path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
        if path.is_dir():
            return path
    return None


def find_run(run: str, runs_root: str | Path, product: str) -> Path:
    """Resolve --run DIR, or 'latest', to a run folder with a finished adapter."""
    if run in ("", "latest"):
        path = latest_run(runs_root, product)
        if path is None:
            raise ConfigError(f"no {product} run found under {runs_root}/{product}/. "
                              f"Train one first: python -m apps.{product}.train")
    else:
        path = Path(run)
    if not (path / "run.json").is_file():
        raise ConfigError(f"{path} is not a run folder (no run.json)")
    status = read_json(path / "run.json").get("status")
    if not (path / "adapter" / "adapter_config.json").is_file():
        raise ConfigError(f"run {path} has no finished adapter (status: {status}). "
                          f"Resume it: python -m apps.{product}.train --output-dir {path} --resume")
    return path


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


def write_eval(run_dir: Path, metrics: dict, predictions: list[dict]) -> Path:
    """Write eval/metrics.json and eval/predictions.jsonl (each atomically) and return the eval folder."""
    out = Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".predictions.jsonl.tmp{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as f:
        for p in predictions:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    os.replace(tmp, out / "predictions.jsonl")
    write_json(out / "metrics.json", metrics)
    return out
