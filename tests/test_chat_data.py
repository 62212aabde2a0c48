"""Chat-format training data for the translator (OpenAI messages, ShareGPT, Alpaca; JSON Lines or one JSON
array), detected per file, and several files mixed in one run with data.weights."""
import json

import pytest

from apps.translator.task import SYSTEM_PROMPT, TASK
from shared.chat import get_format
from shared.config import ConfigError
from shared.data import DataError, DataReport, Row, conversation, detect_format, mix, split, split_sources
from shared.train import train

from .conftest import PAIRS, write_jsonl
from .test_train_resume import _cfg


def openai_row(en, ko, system=None):
    turns = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": en}, {"role": "assistant", "content": ko}]
    return {"messages": turns}


def sharegpt_row(en, ko, system=None):
    turns = ([{"from": "system", "value": system}] if system else []) + [
        {"from": "human", "value": en}, {"from": "gpt", "value": ko}]
    return {"conversations": turns}


def alpaca_row(en, ko, system=None):
    return {"instruction": "Translate into Korean.", "input": en, "output": ko, **({"system": system} if system else {})}


FORMATS = {"openai messages": openai_row, "sharegpt conversations": sharegpt_row, "alpaca": alpaca_row}


def write_json_array(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


# ---------------------------------------------------------------- detection and mapping

@pytest.mark.parametrize("raw, fmt", [
    ({"messages": []}, "openai"), ({"Conversations": []}, "sharegpt"),
    ({"instruction": "i", "input": "", "output": "o"}, "alpaca"), ({"instruction": "i", "output": "o"}, "alpaca"),
    ({"en": "a", "ko": "b"}, "columns"), ({"input": "a", "output": "b"}, "columns"),  # no instruction: columns
])
def test_detect_format(raw, fmt):
    assert detect_format(raw) == fmt


@pytest.mark.parametrize("raw, fmt, expected", [
    (openai_row("Hi.", "안녕.", "Be brief."), "openai", ("Be brief.", "Hi.", "안녕.")),
    (openai_row("Hi.", "안녕."), "openai", (None, "Hi.", "안녕.")),
    ({"messages": [{"role": "developer", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "Hi."}]},
                   {"role": "assistant", "content": " 안녕. "}]}, "openai", ("S", "Hi.", "안녕.")),
    (sharegpt_row("Hi.", "안녕.", "S"), "sharegpt", ("S", "Hi.", "안녕.")),
    ({"conversations": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "안녕."}]}, "sharegpt",
     (None, "Hi.", "안녕.")),
    ({**sharegpt_row("Hi.", "안녕."), "system": " S "}, "sharegpt", ("S", "Hi.", "안녕.")),  # LLaMA-Factory's form
    (alpaca_row("Hi.", "안녕."), "alpaca", (None, "Translate into Korean.\n\nHi.", "안녕.")),
    ({"instruction": "Translate: Hi.", "input": "", "output": "안녕."}, "alpaca", (None, "Translate: Hi.", "안녕.")),
    ({"instruction": "Translate: Hi.", "output": "안녕.", "system": "S", "history": []}, "alpaca",
     ("S", "Translate: Hi.", "안녕.")),
])
def test_conversation_is_system_user_assistant(raw, fmt, expected):
    assert conversation(raw, fmt) == expected


def test_translator_maps_turns_and_keeps_the_row_system_prompt(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [openai_row("Hello.", "안녕하세요.", "Translate formally."),
                                                 openai_row("Thanks.", "감사합니다.")])
    report = DataReport()
    rows = TASK.read(str(path), report)
    assert [(r["en"], r["ko"], r.values.get("system"), r.line) for r in rows] == [
        ("Hello.", "안녕하세요.", "Translate formally.", 1), ("Thanks.", "감사합니다.", None, 2)]
    assert report.formats == {str(path): "openai messages"}
    assert TASK.messages(rows[0])[0] == {"role": "system", "content": "Translate formally."}
    assert TASK.messages(rows[1])[0] == {"role": "system", "content": SYSTEM_PROMPT}  # no system turn: the default
    prompt = TASK.inference_prompt(rows[0], get_format("chatml"))
    assert "Translate formally." in prompt and SYSTEM_PROMPT not in prompt


def test_alpaca_csv_and_json_array_are_read(tmp_path):
    csv_path = tmp_path / "alpaca.csv"
    csv_path.write_text("instruction,input,output\nTranslate into Korean.,Hello.,안녕하세요.\n", encoding="utf-8")
    array = write_json_array(tmp_path / "share.json", [sharegpt_row(e, k) for e, k in PAIRS[:3]])
    assert [r["en"] for r in TASK.read(str(csv_path))] == ["Translate into Korean.\n\nHello."]
    rows = TASK.read(str(array))
    starts = [i for i, line in enumerate(array.read_text().splitlines(), start=1) if line == "  {"]
    assert [(r["en"], r.line) for r in rows] == [(e, n) for (e, _), n in zip(PAIRS, starts)] and len(starts) == 3


@pytest.mark.parametrize("row, field, problem", [
    ({"messages": [{"role": "user", "content": "Hi."}]}, "messages", "has no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "안녕."}]}, "messages", "has no user turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}, "messages",
     "has 2 user and 2 assistant turns; a row must be one exchange"),
    ({"messages": [{"role": "assistant", "content": "b"}, {"role": "user", "content": "a"}]}, "messages",
     "turns are assistant, user; expected user, then assistant"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "b"}]}, "messages", "turn 2 is a second or late system turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}, "messages",
     "turn 2: unknown role 'tool'"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "b"}]}, "messages",
     "turn 1 (user): is empty"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]}, "messages",
     "turn 1 (user): expected text, got int"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "b"}]},
     "messages", "turn 1 (user): has non-text content (image_url)"),
    ({"messages": "Hi."}, "messages", "expected a list of turns, got str"),
    ({"messages": ["Hi.", "안녕."]}, "messages", "turn 1: expected an object with 'role' and 'content', got str"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}]}, "conversations",
     "turn 2: unknown from 'function_call'"),
    ({"conversations": [{"from": "human", "value": "a"}]}, "conversations", "has no assistant turn"),
    ({"instruction": "Translate.", "input": "a", "output": ""}, "output", "output: is empty"),
    ({"instruction": None, "output": "b"}, "instruction", "instruction: is missing (null)"),
    ({"instruction": "a", "output": "b", "history": [["q", "r"]]}, "history", "has 1 earlier exchange(s)"),
])
def test_a_chat_row_that_does_not_fit_names_file_line_and_field(tmp_path, row, field, problem):
    good = openai_row("Hello.", "안녕하세요.") if "messages" in row else sharegpt_row("Hello.", "안녕하세요.") \
        if "conversations" in row else alpaca_row("Hello.", "안녕하세요.")
    path = write_jsonl(tmp_path / "chat.jsonl", [good, row])
    with pytest.raises(DataError) as e:
        TASK.read(str(path))
    assert (e.value.line, e.value.field) == (2, field) and problem in e.value.problem, str(e.value)
    assert str(e.value).startswith(f"{path}, line 2, field '{field}': ")


@pytest.mark.parametrize("second, field, problem", [
    ({"en": "Bye.", "ko": "안녕히."}, "messages",
     "is missing; this file is in openai messages format (detected from line 1), and all rows of a file must be "
     "in one format: put the others in a file of their own"),
    (sharegpt_row("Bye.", "안녕히."), "messages", "is missing"),
])
def test_every_row_of_a_file_has_the_format_of_its_first(tmp_path, second, field, problem):
    path = write_jsonl(tmp_path / "chat.jsonl", [openai_row("Hello.", "안녕하세요."), second])
    with pytest.raises(DataError) as e:
        TASK.read(str(path))
    assert (e.value.line, e.value.field) == (2, field) and problem in e.value.problem


def test_a_chat_row_in_a_file_of_columns_is_told_to_go_in_a_file_of_its_own(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"en": "Hello.", "ko": "안녕하세요."}, openai_row("Bye.", "안녕히.")])
    with pytest.raises(DataError, match="openai messages row in a file of columns .* a file of their own"):
        TASK.read(str(path))


def test_alpaca_row_without_output_in_an_alpaca_file(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [alpaca_row("Hello.", "안녕하세요."), {"instruction": "x", "input": "y"}])
    with pytest.raises(DataError, match=r"line 2, field 'output': is missing; this file is in alpaca format"):
        TASK.read(str(path))


def test_the_price_predictor_says_it_does_not_read_chat_rows(tmp_path):
    from apps.price_predictor.task import TASK as PRICE

    path = write_jsonl(tmp_path / "chat.jsonl", [openai_row("Hello.", "안녕하세요.")])
    with pytest.raises(DataError, match="This is a openai messages row, which this product does not read"):
        PRICE.read(str(path))


# ---------------------------------------------------------------- several files, weights

def test_split_sources():
    assert split_sources("a.jsonl, b.csv,") == ["a.jsonl", "b.csv"] and split_sources("") == []
    assert split_sources("data/x.jsonl") == ["data/x.jsonl"]


def test_an_existing_file_with_a_comma_in_its_name_is_one_file(tmp_path):
    path = write_jsonl(tmp_path / "pairs, v2.jsonl", [{"en": "Hello.", "ko": "안녕하세요."}])
    assert split_sources(str(path)) == [str(path)] and len(TASK.read(str(path))) == 1


def _rows(name, n):
    return [Row({"en": f"{name}{i}"}, name, i + 1) for i in range(n)]


@pytest.mark.parametrize("weights, counts, repeated, left_out", [
    ([], {"a": 10, "b": 4}, 0, 0),
    ([1, 1], {"a": 10, "b": 4}, 0, 0),
    ([2, 1], {"a": 20, "b": 4}, 10, 0),
    ([0.5, 1], {"a": 5, "b": 4}, 0, 5),
    ([1.5, 0], {"a": 15}, 5, 4),
])
def test_a_weight_is_how_many_times_each_row_of_its_file_is_used(weights, counts, repeated, left_out):
    report = DataReport()
    out = mix([_rows("a", 10), _rows("b", 4)], weights, seed=3, report=report)
    got = {name: sum(r.file == name for r in out) for name in ("a", "b") if any(r.file == name for r in out)}
    assert got == counts and report.rows_repeated == repeated
    assert report.dropped.get("left out by data.weights", 0) == left_out
    assert out == mix([_rows("a", 10), _rows("b", 4)], weights, seed=3, report=DataReport())  # deterministic


def test_the_fraction_is_sampled_with_the_seed():
    picks = {seed: tuple(r.line for r in mix([_rows("a", 40)], [0.5], seed, DataReport())) for seed in range(4)}
    assert all(len(p) == 20 and len(set(p)) == 20 for p in picks.values())
    assert len(set(picks.values())) > 1  # another seed, another half
    assert picks[0] == tuple(r.line for r in mix([_rows("a", 40)], [0.5], 0, DataReport()))


def test_copies_of_a_row_stay_on_one_side_of_the_validation_split():
    rows = mix([_rows("a", 20)], [3], seed=0, report=DataReport())
    train_rows, held = split(rows, 0.2, seed=1)
    assert len(held) == 12 and len(train_rows) == 48  # 4 of 20 rows held out, with their copies
    assert not {(r.file, r.line) for r in held} & {(r.file, r.line) for r in train_rows}


def test_split_without_copies_is_unchanged():
    """The grouping must not move any row of an existing run: without copies the split is the old one."""
    import random

    rows = _rows("a", 50)
    order = list(range(50))
    random.Random(7).shuffle(order)
    held = set(order[:round(50 * 0.1)])
    assert split(rows, 0.1, 7) == ([r for i, r in enumerate(rows) if i not in held],
                                   [r for i, r in enumerate(rows) if i in held])


def test_task_read_mixes_files_of_different_formats(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [openai_row(e, k) for e, k in PAIRS[:4]])
    b = tmp_path / "b.csv"
    b.write_text("en,ko\n" + "".join(f"{e},{k}\n" for e, k in PAIRS[3:6]), encoding="utf-8")
    report = DataReport()
    rows = TASK.read(f"{a},{b}", report, weights=[2, 1], seed=1)
    # PAIRS[3] is in both files: the copy in b is a duplicate; a's 4 rows twice, b's 2 others once
    assert len(rows) == 10 and report.dropped == {"duplicate": 1} and report.rows_repeated == 4
    assert report.rows_read + report.rows_repeated == len(rows) + sum(report.dropped.values())
    assert report.formats == {str(a): "openai messages", str(b): "columns"}
    with pytest.raises(ConfigError, match="data.weights has 1 value"):
        TASK.read(f"{a},{b}", DataReport(), weights=[2])


def test_limit_and_last_apply_to_each_file(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"en": e, "ko": k} for e, k in PAIRS[:4]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"en": e, "ko": k} for e, k in PAIRS[4:8]])
    assert [r["en"] for r in TASK.read(f"{a},{b}", limit=1)] == [PAIRS[0][0], PAIRS[4][0]]
    assert [r["en"] for r in TASK.read(f"{a},{b}", last=1)] == [PAIRS[3][0], PAIRS[7][0]]


# ---------------------------------------------------------------- one small file per format trains a step

@pytest.mark.parametrize("fmt, array", [("openai messages", False), ("sharegpt conversations", False),
                                        ("alpaca", False), ("openai messages", True)])
def test_each_format_trains_for_a_step(tiny_model_dir, tmp_path, fmt, array):
    rows = [FORMATS[fmt](e, k, "Translate politely." if i % 2 else None) for i, (e, k) in enumerate(PAIRS)]
    path = write_json_array(tmp_path / "data.json", rows) if array else write_jsonl(tmp_path / "data.jsonl", rows)
    before = path.read_bytes()
    out = tmp_path / "run"
    train(TASK, _cfg(tiny_model_dir, path, out, **{"train.max_steps": 1}), out, "test")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["train"]["global_step"] == 1
    report = json.loads((out / "data_report.json").read_text())
    assert report["formats"] == {str(path): fmt} and report["rows_read"] == len(PAIRS)
    assert report["rows_used"] + report["rows_held_out"] == len(PAIRS)
    assert path.read_bytes() == before


def test_two_files_of_different_formats_train_in_one_run(tiny_model_dir, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [openai_row(e, k) for e, k in PAIRS[:4]])
    b = write_json_array(tmp_path / "b.json", [alpaca_row(e, k) for e, k in PAIRS[4:]])
    out = tmp_path / "run"
    train(TASK, _cfg(tiny_model_dir, f"{a},{b}", out, **{"train.max_steps": 1}), out, "test")
    report = json.loads((out / "data_report.json").read_text())
    assert report["formats"] == {str(a): "openai messages", str(b): "alpaca"} and report["rows_read"] == 8
