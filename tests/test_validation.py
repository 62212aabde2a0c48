"""One validation layer, table-driven: every malformed data file, config value and config file below stops
with the exact error class and one line naming the file, line and field (or the config key, its value and what
is allowed), before any model loads; no run folder is made and the input file is byte-identical afterwards.
The train command is run in-process for every case and as a real process for a few."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apps.price_predictor.task import TASK as PRICE
from apps.translator.task import TASK
from shared.cli import train_main
from shared.config import ConfigError, load_yaml, parse_overrides, resolve
from shared.data import DataError, DataReport

from .conftest import ROOT
from .test_faults import cli_args, cli_error, no_model_load


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def chat(*turns) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = {"en": "Hello.", "ko": "안녕하세요."}
GOOD_CHAT = chat(("user", "Hello."), ("assistant", "안녕하세요."))
DEEP = b"[" * 100_000 + b"]" * 100_000

# (id, file name, bytes, line, field, part of the message)
DATA_CASES = [
    ("missing field", "d.jsonl", jsonl(GOOD, {"en": "a", "kr": "b"}), 2, "ko", "is missing"),
    ("empty text", "d.jsonl", jsonl(GOOD, {"en": "a", "ko": " "}), 2, "ko", "is empty"),
    ("wrong type", "d.jsonl", jsonl({"en": ["a"], "ko": "b"}), 1, "en", "expected text, got list"),
    ("null", "d.jsonl", jsonl({"en": None, "ko": "b"}), 1, "en", "is missing (null)"),
    ("truncated JSON", "d.jsonl", jsonl(GOOD) + b'{"en": "a", "ko": \n', 2, "", "not valid JSON (Expecting value"),
    ("extra text after a JSON line", "d.jsonl", jsonl(GOOD) + b'{"en": "a", "ko": "b"} x\n', 2, "",
     "not valid JSON (extra data at column 24)"),
    ("JSON line that is a list", "d.jsonl", jsonl(GOOD) + b'["a", "b"]\n', 2, "", "expected a JSON object"),
    ("JSON line that is a number", "d.jsonl", jsonl(GOOD) + b"5\n", 2, "", "expected a JSON object"),
    ("JSON line that is a string", "d.jsonl", jsonl(GOOD) + b'"a"\n', 2, "", "expected a JSON object"),
    ("deeply nested JSON line", "d.jsonl", jsonl(GOOD) + DEEP + b"\n", 2, "", "nested too deeply"),
    ("deeply nested value", "d.jsonl", jsonl(GOOD) + b'{"en": ' + DEEP + b', "ko": "b"}\n', 2, "",
     "nested too deeply"),
    ("integer of 5,000 digits", "d.jsonl", b'{"en": ' + b"7" * 5000 + b', "ko": "b"}\n', 1, "",
     "not readable JSON (Exceeds the limit (4300 digits)"),
    ("JSON array element not an object", "d.json", b'[\n {"en": "a", "ko": "b"},\n "c"\n]\n', 3, "",
     "expected a JSON object"),
    ("JSON array not closed", "d.json", b'[\n {"en": "a", "ko": "b"}\n', 2, "", "the array is not closed"),
    ("JSON array bad element", "d.json", b'[\n {"en": "a", "ko": "b"},\n {"en": }\n]\n', 3, "",
     "not valid JSON (Expecting value at column 9)"),
    ("text after a JSON array", "d.json", b'[{"en": "a", "ko": "b"}]\nmore\n', 2, "", "text after the closing ']'"),
    ("deeply nested JSON array", "d.json", b"[\n" + DEEP + b"\n]", 2, "", "nested too deeply"),
    ("Latin-1 bytes", "d.jsonl", '{"en": "café", "ko": "b"}\n'.encode("latin-1"), 1, "en",
     "not valid UTF-8 (byte 0xe9 at column 12, byte offset 11) and not Korean CP949/EUC-KR either"),
    ("bad byte, CR-only line endings", "d.csv", b"en,ko\rHi,x\rcaf\xe9,y\r", 3, "en", "not valid UTF-8"),
    ("a zero byte", "d.jsonl", jsonl(GOOD) + b'{"en": "a\x00", "ko": "b"}\n', 2, "", "contains a zero byte"),
    ("UTF-16 with a broken character", "d.csv", b"\xff\xfe" + "en,ko\nHi,".encode("utf-16-le") + b"\x00\xd8",
     2, "", "not valid UTF-16-LE"),
    ("empty file", "d.jsonl", b"", "", "", "contains no rows"),
    ("blank lines only", "d.csv", b"\r\n\r\n", "", "", "contains no rows"),
    ("CSV header only", "d.csv", b"en,ko\n", "", "", "contains no rows"),
    ("empty JSON array", "d.json", b"[]", "", "", "contains no rows"),
    ("CSV cell missing, CR-only endings", "d.csv", b"en,ko\rHi,x\rBye,\r", 3, "ko", "is empty"),
    ("CSV row too long", "d.csv", b"en,ko\nHi,x,y\n", 2, "", "1 more cell(s) than the header"),
    ("CSV quote never closed", "d.csv", b'en,ko\nHi,x\nBye,"y\nOk,z\n', 3, "",
     "a quoted cell that starts on this line is never closed"),
    ("CSV text after a closing quote", "d.csv", b'en,ko\n"Hi" there,x\n', 2, "", "not valid CSV"),
    ("a .txt file that is not tab-separated", "d.txt", b"Hello = x\n", "", "", "unknown file type"),
    ("an Excel workbook", "d.xlsx", b"PK\x03\x04", "", "", 'use .jsonl, .json, .csv or .tsv (save an Excel sheet as "CSV'),
    ("a column named twice", "d.csv", b"en,EN,ko\na,b,c\n", 1, "", "the header names the column 'EN' twice"),
    ("Korean in the English column", "d.jsonl", jsonl({"en": "안녕하세요.", "ko": "Hello."}, GOOD), 1, "en",
     "is mostly Hangul, and so are 1 of the file's 2 rows: are the English and Korean columns swapped?"),
    ("chat: no assistant turn", "d.jsonl", jsonl(GOOD_CHAT, chat(("user", "Hi."))), 2, "messages",
     "has no assistant turn"),
    ("chat: two exchanges", "d.jsonl", jsonl(chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))),
     1, "messages", "has 2 user and 2 assistant turns; a row must be one exchange"),
    ("chat: a row in another format", "d.jsonl", jsonl(GOOD_CHAT, GOOD), 2, "messages",
     "is missing; this file is in openai messages format (detected from line 1)"),
    ("ShareGPT: unknown speaker", "d.jsonl",
     jsonl({"conversations": [{"from": "human", "value": "a"}, {"from": "tool", "value": "b"}]}), 1, "conversations",
     "turn 2: unknown from 'tool'"),
    ("Alpaca: empty output", "d.jsonl", jsonl({"instruction": "Translate.", "input": "Hi.", "output": ""}), 1,
     "output", "output: is empty"),
]


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def _one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.mark.parametrize("name, content, line, field, problem", [c[1:] for c in DATA_CASES],
                         ids=[c[0] for c in DATA_CASES])
def test_a_malformed_data_file_stops_naming_file_line_and_field(tmp_path, capsys, monkeypatch, tiny_model_dir,
                                                                name, content, line, field, problem):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as e:
        TASK.read(str(path), DataReport())
    assert (e.value.file, e.value.line, e.value.field) == (str(path), line, field)
    assert problem in e.value.problem, e.value.problem
    where = f"{path}, line {line}" if line != "" else str(path)
    assert _one_line(str(e.value)).startswith(f"{where}, field '{field}': " if field else f"{where}: ")
    # the same file through the train command: exit 2, that one line, no model loaded, no run folder
    no_model_load(monkeypatch)
    out = tmp_path / "run"
    assert cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, path, out))) == f"error: {e.value}"
    assert not out.exists() and path.read_bytes() == content


PRICE_CASES = [
    ("decimal comma and point", b'{"title": "Lamp", "description": "d", "price": "1.299,99"}\n', 1, "price",
     "'1.299,99' is ambiguous"),
    ("comma before one digit", (b'{"title": "Lamp", "description": "d", "price": 5}\n{"title": "Mug", '
                                b'"description": "d", "price": "12,5"}\n'), 2, "price", "'12,5' is ambiguous"),
    ("comma before four digits", b"title,description,price\nLamp,d,\"1,2345\"\n", 2, "price", "is ambiguous"),
    ("title not text", b'{"title": 7, "description": "d", "price": 5}\n', 1, "title", "expected text, got int"),
]


@pytest.mark.parametrize("content, line, field, problem", [c[1:] for c in PRICE_CASES], ids=[c[0] for c in PRICE_CASES])
def test_a_malformed_price_file_stops_naming_file_line_and_field(tmp_path, content, line, field, problem):
    path = _write(tmp_path, "items.csv" if content.startswith(b"title,") else "items.jsonl", content)
    with pytest.raises(DataError) as e:
        PRICE.read(str(path), DataReport())
    assert (e.value.line, e.value.field) == (line, field) and problem in e.value.problem
    assert _one_line(str(e.value)).startswith(f"{path}, line {line}, field '{field}': ")
    assert path.read_bytes() == content


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": -1}, "--limit must be 0 (all rows) or more, got -1"),
    ({"last": -5}, "--last must be 0 (all rows) or more, got -5"),
])
def test_negative_row_counts_are_refused_not_counted_from_the_end(tmp_path, kwargs, message):
    path = _write(tmp_path, "d.jsonl", jsonl(GOOD))
    for task in (TASK, PRICE):
        with pytest.raises(ConfigError, match=re.escape(message)):
            task.read(str(path), DataReport(), **kwargs)


# (command-line options, the key, part of the message)
CONFIG_CASES = [
    (["--train.lr", "-1"], "train.lr", "is -1.0; it must be in (0, 1]"),
    (["--train.lr", "0"], "train.lr", "must be in (0, 1]"),
    (["--train.lr", "nan"], "train.lr", "must be a finite number, got 'nan'"),
    (["--train.lr", "inf"], "train.lr", "must be a finite number, got 'inf'"),
    (["--train.lr", "fast"], "train.lr", "expects float, got 'fast'"),
    (["--train.batch_size", "0"], "train.batch_size", "is 0; it must be >= 1"),
    (["--train.grad_accum", "0"], "train.grad_accum", "must be >= 1"),
    (["--lora.r", "0"], "lora.r", "is 0; it must be >= 1"),
    (["--lora.alpha", "-8"], "lora.alpha", "must be >= 1"),
    (["--lora.dropout", "2"], "lora.dropout", "is 2.0; it must be in [0, 1)"),
    (["--data.valid_fraction", "1.5"], "data.valid_fraction", "is 1.5; it must be in [0, 1)"),
    (["--data.valid_fraction", "1"], "data.valid_fraction", "must be in [0, 1)"),
    (["--model.max_length", "0"], "model.max_length", "must be >= 1"),
    (["--train.save_steps", "0"], "train.save_steps", "must be >= 1"),
    (["--train.save_total_limit", "0"], "train.save_total_limit", "must be >= 1"),
    (["--train.logging_steps", "0"], "train.logging_steps", "must be >= 1"),
    (["--train.max_steps", "-1"], "train.max_steps", "must be >= 0"),
    (["--train.epochs", "-1"], "train.epochs", "must be >= 0"),
    (["--train.epochs", "0", "--train.max_steps", "0"], "train.epochs",
     "train.epochs is 0 and train.max_steps is 0: the run would train 0 steps"),
    (["--data.limit", "-3"], "data.limit", "is -3; it must be >= 0"),
    (["--train.warmup_ratio", "1"], "train.warmup_ratio", "must be in [0, 1)"),
    (["--train.warmup_ratio", "-0.1"], "train.warmup_ratio", "must be in [0, 1)"),
    (["--train.weight_decay", "-0.1"], "train.weight_decay", "must be in [0, 1]"),
    (["--train.max_grad_norm", "-1"], "train.max_grad_norm", "must be >= 0"),
    (["--train.seed", "-1"], "train.seed", "must be in [0, 4294967295]"),
    (["--train.optim", "adamw_torchh"], "train.optim",
     "'adamw_torchh' is not an optimizer transformers knows; did you mean adamw_torch"),
    (["--train.optim", "sgdd"], "train.optim", "choices: adamw_torch, "),
    (["--train.report_to", "mlflow"], "train.report_to", "must be one of none, tensorboard, wandb; got 'mlflow'"),
    (["--data.weights", "2,x"], "data.weights", "expects a list of float, got '2,x'"),
    (["--data.weights", "1,-1"], "data.weights", "is [1.0, -1.0]; every value must be >= 0"),
    (["--data.weights", "1,2"], "data.weights", "has 2 value(s) [1.0, 2.0] but data.train names 1 file(s)"),
    (["--data.weights", "0"], "data.weights", "are all 0 [0.0]: no training row would be used"),
    (["--generate.top_p", "0"], "generate.top_p", "must be in (0, 1]"),
    (["--generate.temperature", "0"], "generate.temperature", "must be > 0"),
    (["--generate.max_new_tokens", "0"], "generate.max_new_tokens", "must be >= 1"),
    (["--train.bf16", "maybe"], "train.bf16", "must be one of auto, true, false"),
]


@pytest.mark.parametrize("args, key, message", [c for c in CONFIG_CASES], ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_a_config_value_out_of_range_stops_before_the_model_loads(tmp_path, capsys, monkeypatch, tiny_model_dir,
                                                                  args, key, message):
    data = _write(tmp_path, "d.jsonl", jsonl(GOOD))
    with pytest.raises(ConfigError) as e:
        resolve(cli={**parse_overrides(args), "data.train": str(data)})
    assert key in str(e.value) and message in _one_line(str(e.value)), str(e.value)
    no_model_load(monkeypatch)
    out = tmp_path / "run"
    line = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, data, out, 0) + args))
    assert key in line and message in line
    assert not out.exists() and data.read_bytes() == jsonl(GOOD)


def test_epochs_zero_is_fine_with_max_steps():
    assert resolve(cli={"train.epochs": 0, "train.max_steps": 5}).train.max_steps == 5


@pytest.mark.parametrize("content, message", [
    ("train:\n  lr: 0.001\n  # caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 3); re-save the config file as UTF-8"),
    (b"train:\n  lr: [0.1\n", "not valid YAML (expected ',' or ']', but got '<stream end>' at line 3, column 1)"),
    (b"train:\n\tlr: 0.1\n", "not valid YAML (found character '\\t' that cannot start any token at line 2, column 1)"),
    (b"train:\n  batch_size: 0\n", "config key 'train.batch_size' is 0; it must be >= 1"),
    (b"lora:\n  dropout: 1.0\n", "config key 'lora.dropout' is 1.0; it must be in [0, 1)"),
    (b"train:\n  optim: adam\n", "config key 'train.optim': 'adam' is not an optimizer transformers knows"),
    (b"- a\n- b\n", "expected a mapping of sections at the top level"),
])
def test_a_bad_config_file_is_named(tmp_path, capsys, content, message):
    path = _write(tmp_path, "c.yaml", content)
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert _one_line(str(e.value)).startswith(f"{path}: ") and message in str(e.value), str(e.value)
    line = cli_error(capsys, lambda: train_main(TASK, ["--config", str(path), "--output-dir", str(tmp_path / "run")]))
    assert message in line and not (tmp_path / "run").exists() and path.read_bytes() == content


# ---------------------------------------------------------------- the real command, as a user runs it

PROCESS_CASES = {
    "data not UTF-8": (["--data", "{bad_csv}"], "{bad_csv}, line 3, field 'en': not valid UTF-8"),
    "learning rate -1": (["--data", "{good}", "--train.lr", "-1"], "config key 'train.lr' is -1.0"),
    "epochs 0": (["--data", "{good}", "--epochs", "0"], "the run would train 0 steps"),
    "config not UTF-8": (["--data", "{good}", "--config", "{bad_yaml}"], "{bad_yaml}: not UTF-8 text"),
}


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """Every case's `python -m apps.translator.train`, started together (each spends most of its time importing)."""
    base = tmp_path_factory.mktemp("cli")
    files = {"bad_csv": _write(base, "bad.csv", b"en,ko\nHi,x\ncaf\xe9,y\n"), "good": _write(base, "good.jsonl", jsonl(GOOD)),
             "bad_yaml": _write(base, "c.yaml", b"train:\n  lr: 0.1 # \xe9\n")}
    before = {name: p.read_bytes() for name, p in files.items()}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "FT_RUNS_DIR": str(base / "runs")}
    started = {}
    for case, (args, _) in PROCESS_CASES.items():
        cwd = base / case.replace(" ", "-")
        cwd.mkdir()
        argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args] + ["--output-dir", str(cwd / "x")]
        started[case] = (cwd, subprocess.Popen([sys.executable, "-m", "apps.translator.train", *argv], cwd=cwd,
                                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = {case: (cwd, proc.wait(timeout=300), proc.stderr.read()) for case, (cwd, proc) in started.items()}
    return done, files, before, base


@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_the_train_command_exits_2_with_one_line(processes, case):
    done, files, before, base = processes
    cwd, code, err = done[case]
    expected = PROCESS_CASES[case][1].format(**{k: str(v) for k, v in files.items()})
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert expected in errors[0] and err.rstrip().splitlines()[-1] == errors[0], err
    assert list(cwd.iterdir()) == [] and not (base / "runs").exists()  # no run folder, no runs root, no LATEST
    assert {name: p.read_bytes() for name, p in files.items()} == before
