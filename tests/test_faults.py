"""Fault injection: bad data, interrupted training, pre-flight failures, security.

Every fault is injected for real where this machine allows it (bad bytes on disk, real signals to a real
training process, a model folder with pickled weights or its own code) and simulated where it does not
(a full disk, a missing bitsandbytes, an unwritable folder when the tests run as root). Each test states
what the program must do and what must be kept. docs/failure-modes.md is the table of these tests.

Tolerance for "resume matches an uninterrupted run with the same seed": every adapter tensor within 1e-6
(absolute) and every logged training loss within 1e-5.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from apps.price_predictor.task import TASK as PRICE
from apps.translator.task import TASK
from shared import models
from shared.cli import raise_terminated, run_cli, train_main
from shared.config import ConfigError, ModelConfig, resolve
from shared.data import DataError, DataReport, read_rows
from shared.train import build_dataset, estimate_run_bytes, train

from .conftest import PAIRS, ROOT, make_tiny_model_dir, write_jsonl
from .test_train_resume import _cfg

ADAPTER_ATOL, LOSS_ATOL = 1e-6, 1e-5


# ---------------------------------------------------------------- helpers

def cli_args(model_dir, data, out, steps=4, *extra):
    """The translator's train command on the tiny model (the cpu profile YAML underneath, as a user gets it)."""
    return ["--model", str(model_dir), "--model.chat_template", "chatml", "--model.dtype", "float32",
            "--model.max_length", "256", "--data", str(data), "--output-dir", str(out), "--max-steps", str(steps),
            "--train.batch_size", "4", "--train.save_steps", "2", "--train.logging_steps", "1",
            "--train.bf16", "false", "--train.warmup_ratio", "0", "--lora.r", "4",
            "--lora.target_modules", "q_proj,v_proj", "--data.valid_fraction", "0.1", *extra]


def cli_error(capsys, fn, code=2) -> str:
    """Run an entry point that must stop with one clear line: returns that line."""
    with pytest.raises(SystemExit) as e:
        fn()
    err = capsys.readouterr().err
    assert e.value.code == code, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def losses(run: Path) -> dict:
    return {p["step"]: p["loss"] for p in record(run)["loss_curve"] if "loss" in p}


def assert_same_run(run: Path, reference: Path) -> None:
    """Resumed run == uninterrupted run: adapter tensors and the loss curve, within the stated tolerance."""
    assert record(run)["status"] == "completed"
    a = load_file(reference / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=ADAPTER_ATOL, rtol=0), key
    la, lb = losses(reference), losses(run)
    assert la.keys() == lb.keys()
    for step in la:
        assert lb[step] == pytest.approx(la[step], abs=LOSS_ATOL), step


def assert_not_complete(run: Path, status: str) -> None:
    """A run folder that stopped never looks finished: its status says so and there is no adapter/."""
    assert record(run)["status"] == status
    assert not (run / "adapter").exists()
    with pytest.raises(ConfigError, match="no finished adapter"):
        from shared.runs import find_run
        find_run(str(run), "translator")


def no_model_load(monkeypatch):
    """Pre-flight checks must fire before the (slow) model load."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the pre-flight check")
    monkeypatch.setattr(models, "load", refuse)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS * 4])


@pytest.fixture(scope="module")
def reference(tiny_model_dir, pairs, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run (train() with test_train_resume's config)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return train(TASK, _cfg(tiny_model_dir, pairs, out), out, "test")


# ---------------------------------------------------------------- data faults: stop (file, line, field)

FIELDS = TASK.fields


@pytest.mark.parametrize("name, content, line, field, problem", [
    ("missing field", b'{"en": "a", "ko": "b"}\n{"en": "c", "kr": "d"}\n', 2, "ko", "is missing"),
    ("empty string", b'{"en": "a", "ko": ""}\n', 1, "ko", "is empty"),
    ("blank string", b'{"en": " \\t ", "ko": "b"}\n', 1, "en", "is empty"),
    ("number", b'{"en": 42, "ko": "b"}\n', 1, "en", "expected text, got int"),
    ("list", b'{"en": "a", "ko": ["b"]}\n', 1, "ko", "expected text, got list"),
    ("bool", b'{"en": true, "ko": "b"}\n', 1, "en", "expected text, got bool"),
    ("null", b'{"en": "a", "ko": null}\n', 1, "ko", "is missing (null)"),
    ("bad byte in a value", b'{"en": "a", "ko": "b"}\n\n{"en": "c", "ko": "d\xffe"}\n', 3, "ko", "not valid UTF-8"),
    ("Latin-1 file", '{"en": "café", "ko": "카페"}\n'.encode("latin-1", "replace"), 1, "en", "not valid UTF-8"),
    ("truncated JSON", b'{"en": "a", "ko": "b"}\n{"en": "a", "ko": \n', 2, "", "not valid JSON"),
])
def test_bad_jsonl_rows_stop_naming_file_line_and_field(tmp_path, name, content, line, field, problem):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    report = DataReport()
    with pytest.raises(DataError) as e:
        read_rows(str(path), FIELDS, report)
    assert (e.value.line, e.value.field) == (line, field), name
    assert problem in e.value.problem and str(e.value).startswith(f"{path}, line {line}")


@pytest.mark.parametrize("suffix, content, line, field, problem", [
    (".csv", b"en,ko\nHi,\xc3\x28\n", 2, "ko", "not valid UTF-8"),
    (".tsv", b"en\tko\r\nHi\t\r\n", 2, "ko", "is empty"),
    (".csv", b"en,ko\nHi,a,b\n", 2, "", "more cell(s) than the header"),
    (".csv", b"english,note\nHi,x\n", 2, "ko", "is missing"),
])
def test_bad_delimited_rows_stop_naming_file_line_and_field(tmp_path, suffix, content, line, field, problem):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_rows(str(path), FIELDS)
    assert (e.value.line, e.value.field) == (line, field) and problem in e.value.problem


def test_bom_and_crlf_are_accepted_with_true_line_numbers(tmp_path):
    path = tmp_path / "win.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"en": "a", "ko": "b"}\r\n\r\n{"en": "c", "ko": "d"}\r\n')
    rows = read_rows(str(path), FIELDS)
    assert [(r["en"], r["ko"], r.line) for r in rows] == [("a", "b", 1), ("c", "d", 3)]  # no stray \r, no BOM
    bad = tmp_path / "win_bad.jsonl"
    bad.write_bytes(b'\xef\xbb\xbf{"en": "a", "ko": "b"}\r\n{"en": "c", "ko": ""}\r\n')
    with pytest.raises(DataError, match="line 2, field 'ko'"):
        read_rows(str(bad), FIELDS)


# ---------------------------------------------------------------- data faults: drop and count

def test_duplicates_and_overlong_rows_are_dropped_and_counted(tmp_path, tiny_model_cfg):
    rows = [{"en": e, "ko": k} for e, k in PAIRS] + [{"en": "Hello.", "ko": "안녕하세요."}] * 3
    rows.append({"en": "A very long sentence. " * 20, "ko": "아주 긴 문장입니다. " * 20})
    report = DataReport()
    kept = read_rows(str(write_jsonl(tmp_path / "d.jsonl", rows)), FIELDS, report)
    assert report.dropped == {"duplicate": 3} and len(kept) == len(PAIRS) + 1
    _, tokenizer, fmt = models.load(tiny_model_cfg)
    ds = build_dataset(kept, TASK, tokenizer, fmt, 256, report)
    assert len(ds) == len(PAIRS) and report.dropped["longer than max_length=256 tokens"] == 1
    assert report.rows_used == len(PAIRS) and {"p50", "p90", "p99", "max", "mean"} <= report.token_lengths.keys()
    assert report.token_lengths["max"] <= 256


@pytest.mark.parametrize("price, reason", [
    (-3, "price out of range [0.5, 999.49]"),
    (0, "price out of range [0.5, 999.49]"),
    (1e9, "price out of range [0.5, 999.49]"),  # absurd
    ("12 dollars", "price: expected a number"),
    ("", "price: expected a number"),
    (True, "price: expected a number"),
    ("NaN", "price: expected a finite number"),
    ("inf", "price: expected a finite number"),
    (None, "price: is missing (null)"),
])
def test_each_bad_price_is_dropped_with_its_reason(tmp_path, price, reason):
    good = {"title": "Kettle", "description": "Steel.", "price": 20}
    path = write_jsonl(tmp_path / "items.jsonl", [good, {"title": "Lamp", "description": "Bright.", "price": price}])
    report = DataReport()
    kept = PRICE.read(str(path), report)
    assert [r["title"] for r in kept] == ["Kettle"]
    assert report.dropped == {reason: 1} and report.rows_read == 2


def test_a_bad_title_stops_even_in_the_price_task(tmp_path):
    """Prices are dropped (real listings often lack one); a broken text field is a broken file: stop."""
    path = write_jsonl(tmp_path / "items.jsonl", [{"title": 7, "description": "d", "price": 5}])
    with pytest.raises(DataError, match=r"line 1, field 'title': expected text"):
        PRICE.read(str(path), DataReport())


def test_every_run_writes_a_data_report_that_adds_up(tiny_model_dir, tmp_path):
    rows = [{"en": e, "ko": k} for e, k in PAIRS] * 2 + [{"en": "Long. " * 60, "ko": "길다. " * 60}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    run = train(TASK, _cfg(tiny_model_dir, data, tmp_path / "run", **{"train.max_steps": 1}), tmp_path / "run", "t")
    report = json.loads((run / "data_report.json").read_text())
    assert report == record(run)["data"]
    assert report["rows_read"] == 17 and report["dropped"]["duplicate"] == 8
    assert report["rows_read"] == report["rows_used"] + sum(report["dropped"].values()) + report["rows_held_out"]
    assert report["rows_held_out"] >= 1 and report["token_lengths"]["max"] <= 256


def test_no_usable_rows_stops_before_the_run_folder_exists(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", [{"en": "Long. " * 60, "ko": f"길다 {i}. " * 60} for i in range(4)])
    with pytest.raises(DataError, match="no usable rows"):
        train(TASK, _cfg(tiny_model_dir, data, tmp_path / "run"), tmp_path / "run", "t")
    assert not (tmp_path / "run").exists()


def test_a_validation_set_with_no_row_that_fits_is_skipped(tiny_model_dir, pairs, tmp_path):
    """Found by this suite: every validation row over max_length used to crash the run after training."""
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"en": "Long. " * 60, "ko": "길다. " * 60}])
    run = train(TASK, _cfg(tiny_model_dir, pairs, tmp_path / "run", **{"data.valid": str(valid),
                                                                        "train.max_steps": 1}), tmp_path / "run", "t")
    assert record(run)["status"] == "completed" and record(run)["eval_loss"] is None


# ---------------------------------------------------------------- interrupted training (in-process, fast)

class At(TrainerCallback):
    """Do something at the start of an optimizer step."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.step:
            self.action()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_mid_run_then_resume_matches(tiny_model_dir, pairs, reference, tmp_path, signum):
    run = tmp_path / "run"
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever started pytest
    try:
        with pytest.raises(KeyboardInterrupt):
            train(TASK, _cfg(tiny_model_dir, pairs, run), run, "t",
                  callbacks=(At(3, lambda: os.kill(os.getpid(), signum)),))
    finally:
        signal.signal(signal.SIGINT, old)
    assert_not_complete(run, "interrupted")
    assert signal.getsignal(signal.SIGTERM) is not raise_terminated  # the SIGTERM handler was put back
    train(TASK, _cfg(tiny_model_dir, pairs, run), run, "t", resume=True)
    assert record(run)["resumed_from"].endswith("checkpoint-2")
    assert_same_run(run, reference)
    # both sessions in the record: the stopped one (from step 0, stopped in step 3) and the resumed one
    assert [(h["status"], h["resumed_from"] is None) for h in record(run)["history"]] == [
        ("interrupted", True), ("completed", False)]


def test_disk_full_while_writing_a_checkpoint_then_resume(tiny_model_dir, pairs, reference, tmp_path, monkeypatch):
    """ENOSPC half-way through checkpoint-4: status 'failed' with the reason, checkpoint-2 kept, the half-written
    checkpoint-4 set aside on --resume, and the resumed run ends where the uninterrupted one does."""
    from transformers import Trainer

    real = Trainer._save_rng_state

    def full_disk(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(output_dir) / "rng_state.pth"))
        return real(self, output_dir)

    run = tmp_path / "run"
    monkeypatch.setattr(Trainer, "_save_rng_state", full_disk)
    with pytest.raises(OSError):
        train(TASK, _cfg(tiny_model_dir, pairs, run), run, "t")
    monkeypatch.setattr(Trainer, "_save_rng_state", real)
    assert_not_complete(run, "failed")
    assert "No space left on device" in record(run)["error"]
    assert (run / "checkpoints" / "checkpoint-4").is_dir()  # half-written: weights, no trainer_state.json
    assert not (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()

    train(TASK, _cfg(tiny_model_dir, pairs, run), run, "t", resume=True)
    assert record(run)["resumed_from"].endswith("checkpoint-2")
    assert_same_run(run, reference)


def test_a_stop_while_writing_the_adapter_leaves_no_adapter(tiny_model_dir, pairs, reference, tmp_path,
                                                            monkeypatch):
    from shared import train as train_mod

    def stopped(trainer, tokenizer, out, full_model):
        (out.with_name("adapter.tmp")).mkdir()
        raise KeyboardInterrupt("Ctrl-C while writing adapter/")

    run = tmp_path / "run"
    monkeypatch.setattr(train_mod, "_save_weights", stopped)
    with pytest.raises(KeyboardInterrupt):
        train(TASK, _cfg(tiny_model_dir, pairs, run), run, "t")
    monkeypatch.undo()
    assert_not_complete(run, "interrupted")
    train(TASK, _cfg(tiny_model_dir, pairs, run), run, "t", resume=True)  # 0 steps left: writes adapter/
    assert record(run)["train"]["steps_this_session"] == 0
    assert_same_run(run, reference)


def test_os_errors_are_one_line_not_a_traceback(capsys):
    def full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/checkpoints/checkpoint-50/optimizer.pt")

    line = cli_error(capsys, lambda: run_cli(full), code=1)
    assert "No space left on device: /runs/x/checkpoints/checkpoint-50/optimizer.pt" in line


# ---------------------------------------------------------------- interrupted training (real process, slow)

def _launch(args, log):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    # `python -m apps.translator.train ARGS` with Ctrl-C raising KeyboardInterrupt, as in a terminal (a shell
    # may start background jobs with SIGINT ignored, and a child inherits that)
    launcher = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv = ['apps.translator.train', *sys.argv[1:]]; "
                "runpy.run_module('apps.translator.train', run_name='__main__', alter_sys=True)")
    return subprocess.Popen([sys.executable, "-c", launcher, *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cli_reference(tiny_model_dir, pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-reference") / "run"
    train_main(TASK, cli_args(tiny_model_dir, pairs, out, 30))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, status", [
    (signal.SIGINT, 130, "interrupted"),   # Ctrl-C
    (signal.SIGTERM, 143, "interrupted"),  # a scheduler or `kill`
    (signal.SIGKILL, -9, "running"),       # a hard kill: nothing runs, the folder still never looks complete
])
def test_kill_a_training_process_then_resume(tiny_model_dir, pairs, cli_reference, tmp_path, signum, code,
                                             status):
    run = tmp_path / "run"
    args = cli_args(tiny_model_dir, pairs, run, 30)
    log = (tmp_path / "log.txt").open("w")
    proc = _launch(args, log)
    first = run / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == code
    log.close()
    out = (tmp_path / "log.txt").read_text()
    if signum != signal.SIGKILL:
        assert "Traceback" not in out and "--resume" in out
    assert_not_complete(run, status)
    assert record(run)["loss_curve"]  # the progress so far is in run.json

    train_main(TASK, args + ["--resume"])
    assert record(run)["resumed_from"] is not None
    assert_same_run(run, cli_reference)


# ---------------------------------------------------------------- pre-flight: clear message, exit 2, nothing left

def test_output_location_that_is_a_file(capsys, tiny_model_dir, pairs, tmp_path, monkeypatch):
    (tmp_path / "taken").write_text("x")
    no_model_load(monkeypatch)
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, pairs, tmp_path / "taken" / "run")))
    assert "is a file, not a folder" in line


def test_unwritable_output_location(capsys, tiny_model_dir, pairs, tmp_path, monkeypatch):
    """The tests run as root, for whom chmod does not bite: the write probe itself is made to fail."""
    import tempfile

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    no_model_load(monkeypatch)
    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    out = tmp_path / "ro" / "run"
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, pairs, out)))
    assert "is not writable (Permission denied)" in line and not out.exists()


def test_full_disk_is_refused_before_training(capsys, tiny_model_dir, pairs, tmp_path, monkeypatch):
    from shared import train as train_mod

    monkeypatch.setattr(train_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    out = tmp_path / "run"
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, pairs, out)))
    assert "not enough free disk space" in line and "1 MiB are free" in line and not out.exists()


def test_space_estimate_grows_with_what_is_kept(tiny_model_cfg):
    model, tokenizer, _ = models.load(tiny_model_cfg)
    small = resolve(cli={"lora.r": 4, "train.save_total_limit": 1, "lora.target_modules": ["q_proj"]})
    big = resolve(cli={"lora.r": 64, "train.save_total_limit": 5, "lora.target_modules": ["all-linear"]})
    assert 16 << 20 < estimate_run_bytes(model, tokenizer, small) < estimate_run_bytes(model, tokenizer, big)


@pytest.mark.parametrize("model, message", [
    ("no-such-model-xyz", "could not load model 'no-such-model-xyz' from the Hugging Face hub"),
    ("someone/not-there", "Registry names: gemma3-270m"),
])
def test_unknown_model(capsys, pairs, tmp_path, model, message):
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(model, pairs, tmp_path / "run")))
    assert message in line and not (tmp_path / "run").exists()


def test_model_folder_without_config_or_weights(capsys, tiny_model_dir, pairs, tmp_path):
    (tmp_path / "empty").mkdir()
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tmp_path / "empty", pairs, tmp_path / "r1")))
    assert "has no config.json" in line
    shutil.copytree(tiny_model_dir, tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tmp_path / "noweights", pairs, tmp_path / "r2")))
    assert "has no weights (no .safetensors file)" in line
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


@pytest.mark.parametrize("args, message", [
    (["--model.backend", "unsloth"], "backend 'unsloth' needs a CUDA GPU"),
    (["--profile", "gpu"], "profile 'gpu' needs a CUDA GPU"),
])
def test_options_this_machine_cannot_honour(capsys, tiny_model_dir, pairs, tmp_path, args, message):
    out = tmp_path / "run"
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, pairs, out) + args))
    assert message in line and not out.exists()


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_without_bitsandbytes(capsys, tiny_model_dir, pairs, tmp_path, monkeypatch, quantization):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    out = tmp_path / "run"
    line = cli_error(capsys, lambda: train_main(
        TASK, cli_args(tiny_model_dir, pairs, out) + ["--model.quantization", quantization]))
    assert f"quantization '{quantization}' needs bitsandbytes" in line and "pip install bitsandbytes" in line
    assert not out.exists()


@pytest.mark.parametrize("yaml_text, message", [
    ("lora:\n  rank: 8\n", "unknown config key 'lora.rank'. Valid keys in 'lora': r, alpha, dropout"),
    ("train:\n  lr: fast\n", "config key 'train.lr' expects float, got 'fast'"),
    ("model:\n  quantization: 3bit\n", "must be one of none, 4bit, 8bit"),
    ("optimizer:\n  lr: 1\n", "unknown section 'optimizer'. Sections: model, lora"),
])
def test_bad_config_file(capsys, tmp_path, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    line = cli_error(capsys, lambda: train_main(TASK, ["--config", str(tmp_path / "c.yaml")]))
    assert message in line and "c.yaml" in line


def test_resume_without_a_run(capsys, tmp_path):
    line = cli_error(capsys, lambda: train_main(TASK, ["--resume", "--output-dir", str(tmp_path / "none")]))
    assert "no run to resume" in line


# ---------------------------------------------------------------- an adapter trained on another base

@pytest.fixture()
def run_on_copy(tiny_model_dir, pairs, tmp_path) -> tuple[Path, Path]:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    run = tmp_path / "run"
    train(TASK, _cfg(base, pairs, run, **{"train.max_steps": 1}), run, "t")
    return base, run


def _entry_points(run: Path):
    from apps.translator import evaluate, translate
    return {"translate": lambda: translate.main(["--run", str(run), "Hello."]),
            "evaluate": lambda: evaluate.main(["--run", str(run), "--limit", "2", "--no-base",
                                               "--data", record(run)["config"]["data"]["train"]])}


def test_adapter_on_another_base_is_refused(capsys, run_on_copy):
    from shared.generate import load_run
    from shared.runs import Run

    base, run = run_on_copy
    load_run(Run.load(run))  # the base it was trained on: loads
    make_tiny_model_dir(base, seed=1)  # same architecture, other weights, same path
    for name, entry in _entry_points(run).items():
        line = cli_error(capsys, entry)
        assert "was trained on another base model" in line and "different weights" in line, name


def test_adapter_on_its_own_merged_export_as_base_is_refused(capsys, tiny_model_dir, pairs, tmp_path):
    from shared import export

    base, run = tmp_path / "base", tmp_path / "run"
    shutil.copytree(tiny_model_dir, base)
    # a few steps at a high rate, so that the adapter is far from its zero start and the merge changes weights
    train(TASK, _cfg(base, pairs, run, **{"train.max_steps": 4, "train.lr": 1e-2, "train.warmup_ratio": 0.0}), run, "t")
    merged = tmp_path / "merged"
    export.main(["--run", str(run), "--merged", str(merged)])
    shutil.rmtree(base)
    shutil.copytree(merged, base)  # the embeddings are the base's, the projections carry the adapter already
    for name, entry in _entry_points(run).items():
        line = cli_error(capsys, entry)
        assert "was trained on another base model" in line and "a merged model?" in line, name


def test_adapter_on_another_architecture_is_refused(capsys, run_on_copy):
    from transformers import LlamaConfig, LlamaForCausalLM

    base, run = run_on_copy
    config = LlamaConfig.from_pretrained(base)
    config.hidden_size, config.intermediate_size = 32, 64
    LlamaForCausalLM(config).save_pretrained(base)
    line = cli_error(capsys, _entry_points(run)["translate"])
    assert "another base model" in line and "hidden_size 64 vs 32" in line
    # a run saved before fingerprints existed: PEFT's own shape check, turned into one line
    rec = record(run)
    del rec["base_model"]
    (run / "run.json").write_text(json.dumps(rec))
    line = cli_error(capsys, _entry_points(run)["translate"])
    assert "does not fit the base model" in line


# ---------------------------------------------------------------- security

def test_trust_remote_code_is_off_unless_asked():
    assert ModelConfig().trust_remote_code is False
    for app in ("translator", "price_predictor"):
        for profile in ("cpu", "gpu"):
            assert resolve(yaml_path=ROOT / "apps" / app / "configs" / f"{profile}.yaml").model.trust_remote_code \
                is False
    from shared.config import parse_overrides
    assert parse_overrides(["--model.trust_remote_code"]) == {"model.trust_remote_code": "true"}


@pytest.mark.parametrize("trust", [False, True])
def test_loading_passes_trust_remote_code_and_asks_for_safetensors(tiny_model_cfg, monkeypatch, trust):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = {}
    for cls, key in ((AutoModelForCausalLM, "model"), (AutoTokenizer, "tokenizer")):
        real = cls.from_pretrained

        def spy(*a, _real=real, _key=key, **k):
            seen[_key] = k
            return _real(*a, **k)
        monkeypatch.setattr(cls, "from_pretrained", spy)
    tiny_model_cfg.trust_remote_code = trust
    models.load(tiny_model_cfg)
    assert seen["model"]["trust_remote_code"] is trust and seen["tokenizer"]["trust_remote_code"] is trust
    assert seen["model"]["use_safetensors"] is True


def test_model_code_in_the_folder_does_not_run(capsys, tiny_model_dir, pairs, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="custom_llama", auto_map={"AutoConfig": "evil.Config",
                                                       "AutoModelForCausalLM": "evil.Model"})
    (custom / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (custom / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(custom, pairs, tmp_path / "run")))
    assert "ships its own Python code" in line and "--model.trust_remote_code true" in line
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_pickled_weights_are_refused(capsys, tiny_model_dir, pairs, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(pickled, pairs, tmp_path / "run")))
    assert "pytorch_model.bin" in line and "unpickling can run code" in line


def test_pickled_adapter_is_refused(capsys, run_on_copy):
    _, run = run_on_copy
    adapter = run / "adapter"
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    line = cli_error(capsys, _entry_points(run)["translate"])
    assert "no adapter_model.safetensors" in line
