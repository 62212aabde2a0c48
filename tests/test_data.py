import json

import pytest

from shared.config import ConfigError
from shared.data import DataError, DataReport, Field, number_from_text, percentiles, read_rows, split

FIELDS = [Field("en", aliases=("english", "source")), Field("ko", aliases=("korean", "target"))]


def _err(tmp_path, name, content: bytes) -> DataError:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_rows(str(path), FIELDS)
    return e.value


@pytest.mark.parametrize("content, line, field, problem", [
    (b'{"en": "a", "ko": "b"}\n{"en": "c"}\n', 2, "ko", "is missing"),
    (b'{"en": "a", "ko": "b"}\n\n{"en": "  ", "ko": "d"}\n', 3, "en", "is empty"),
    (b'{"en": 5, "ko": "b"}\n', 1, "en", "expected text, got int"),
    (b'{"en": null, "ko": "b"}\n', 1, "en", "missing (null)"),
    (b'{"en": "a", "ko": "b"}\n{"en": "a", "ko": \n', 2, "", "not valid JSON"),
    (b'{"en": "a", "ko": "b"}\n{"en": "\xff\xfe", "ko": "b"}\n', 2, "en", "not valid UTF-8"),
    (b'["en", "ko"]\n', 1, "", "expected a JSON object"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, content, line, field, problem):
    err = _err(tmp_path, "bad.jsonl", content)
    assert err.line == line and err.field == field and problem in err.problem
    assert "bad.jsonl" in str(err) and f"line {line}" in str(err)


def test_bom_crlf_and_aliases_are_accepted(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes("\ufeffEnglish,Korean\r\nHello,안녕하세요\r\n\"Yes, please\",네\r\n".encode("utf-8"))
    rows = read_rows(str(path), FIELDS)
    assert [(r["en"], r["ko"]) for r in rows] == [("Hello", "안녕하세요"), ("Yes, please", "네")]
    assert rows[1].line == 3


def test_tsv_and_csv_errors_have_lines(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("source\ttarget\nHi\t안녕\nBye\t\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_rows(str(path), FIELDS)
    assert (e.value.line, e.value.field) == (3, "ko")


@pytest.mark.parametrize("text, expected", [
    # plain TSV has no quoting: quotes are part of the text
    ('en\tko\n"Stop," he said.\t"멈춰"라고 그가 말했습니다.\n', ('"Stop," he said.', '"멈춰"라고 그가 말했습니다.')),
    ('en\tko\n"Hello."\t"안녕하세요."\nI like tea.\t저는 차를 좋아합니다.\n', ('"Hello."', '"안녕하세요."')),
    # written by a CSV writer with a tab delimiter (pandas to_csv(sep="\t")): its quoting is read
    ('en\tko\n"""Stop,"" he said."\t"""멈춰""라고 그가 말했습니다."\n', ('"Stop," he said.', '"멈춰"라고 그가 말했습니다.')),
    ('"en"\t"ko"\n"Hello."\t"안녕하세요."\n', ('Hello.', '안녕하세요.')),
    ('en\tko\n"Two\nlines."\t"두\t줄."\n', ('Two\nlines.', '두\t줄.')),
])
def test_tab_separated_quotes_are_text_unless_the_file_quotes_csv_style(tmp_path, text, expected):
    path = tmp_path / "pairs.tsv"
    path.write_text(text, encoding="utf-8")
    row = read_rows(str(path), FIELDS)[0]
    assert (row["en"], row["ko"]) == expected


def test_duplicates_dropped_and_counted_limit_applies(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"en":"a","ko":"b"}\n{"en":"a","ko":"b"}\n{"en":"c","ko":"d"}\n{"en":"e","ko":"f"}\n')
    report = DataReport()
    rows = read_rows(str(path), FIELDS, report)
    assert len(rows) == 3 and report.dropped["duplicate"] == 1 and report.rows_read == 4
    assert [r["en"] for r in read_rows(str(path), FIELDS, limit=2)] == ["a"]  # first 2 file rows, 1 unique
    assert [r["en"] for r in read_rows(str(path), FIELDS, last=2)] == ["c", "e"]


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_rows(str(tmp_path / "nope.jsonl"), FIELDS)
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        read_rows(str(tmp_path / "x.parquet"), FIELDS)


def test_split_is_deterministic_and_disjoint():
    rows = list(range(100))
    a_train, a_held = split(rows, 0.1, seed=1)
    b_train, b_held = split(rows, 0.1, seed=1)
    assert a_held == b_held and len(a_held) == 10 and not set(a_train) & set(a_held)


def test_percentiles():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}


def test_optional_field_may_be_null(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"en": "a", "ko": "b", "note": null}\n{"en": "c", "ko": "d", "note": "x"}\n')
    rows = read_rows(str(path), FIELDS + [Field("note", required=False)])
    assert [r.values["note"] for r in rows] == [None, "x"]


# ---------------------------------------------------------------- what people's tools write

PAIRS_TEXT = "en,ko\nHello,안녕하세요\n\"Yes, please\",네\n"
EXPECTED = [("Hello", "안녕하세요", 2), ("Yes, please", "네", 3)]


def _read(path, report=None):
    return [(r["en"], r["ko"], r.line) for r in read_rows(str(path), FIELDS, report)]


@pytest.mark.parametrize("name, content, encoding", [
    ("utf8.csv", PAIRS_TEXT.encode("utf-8"), None),
    ("bom.csv", b"\xef\xbb\xbf" + PAIRS_TEXT.encode("utf-8"), None),
    ("excel.csv", PAIRS_TEXT.encode("utf-16"), "utf-16-le"),  # BOM + little-endian, as Excel writes it
    ("be.csv", b"\xfe\xff" + PAIRS_TEXT.encode("utf-16-be"), "utf-16-be"),
    ("nobom.csv", PAIRS_TEXT.encode("utf-16-le"), "utf-16-le"),
    ("utf32.csv", PAIRS_TEXT.encode("utf-32"), "utf-32-le"),
    ("cp949.csv", PAIRS_TEXT.encode("cp949"), "cp949"),  # Korean Windows / Excel
    ("euckr.csv", PAIRS_TEXT.encode("euc-kr"), "cp949"),  # EUC-KR is a subset of CP949
    ("crlf.csv", PAIRS_TEXT.replace("\n", "\r\n").encode("utf-8"), None),
    ("cr.csv", PAIRS_TEXT.replace("\n", "\r").encode("utf-8"), None),  # old Mac Excel
    ("cr16.csv", PAIRS_TEXT.replace("\n", "\r").encode("utf-16"), "utf-16-le"),
    ("tabs.csv", PAIRS_TEXT.replace(",", "\t").replace("Yes\t please", "Yes, please").encode(), None),  # misnamed
    ("semicolon.csv", PAIRS_TEXT.replace(",", ";").replace('"Yes; please"', '"Yes, please"').encode(), None),
    ("sep.csv", ("sep=;\n" + PAIRS_TEXT.replace(",", ";").replace('"Yes; please"', '"Yes, please"')).encode(), None),
    ("excel.txt", PAIRS_TEXT.replace(",", "\t").replace("Yes\t please", "Yes, please").encode("utf-16"), "utf-16-le"),
    ("pairs.tsv", PAIRS_TEXT.replace(",", "\t").replace("Yes\t please", "Yes, please").encode(), None),
])
def test_encodings_and_line_endings_people_save(tmp_path, name, content, encoding):
    path = tmp_path / name
    path.write_bytes(content)
    report = DataReport()
    assert [(e, k, n - name.startswith("sep")) for e, k, n in _read(path, report)] == EXPECTED
    assert report.encodings == ({str(path): encoding} if encoding else {})
    assert path.read_bytes() == content


def test_a_korean_legacy_file_is_named_in_the_log(tmp_path, capsys):
    path = tmp_path / "k.csv"
    path.write_bytes(PAIRS_TEXT.encode("cp949"))
    read_rows(str(path), FIELDS)
    assert f"{path}: not UTF-8; read as Korean CP949/EUC-KR" in capsys.readouterr().err


def test_damaged_utf8_korean_is_not_misread_as_cp949(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(PAIRS_TEXT.encode("utf-8").replace("네".encode(), "네".encode()[:2]))
    with pytest.raises(DataError, match=r"line 3, field 'ko': not valid UTF-8"):
        read_rows(str(path), FIELDS)


@pytest.mark.parametrize("content", [b'{"en": "a", "ko": "b"}\r{"en": "c", "ko": "d"}\r',
                                     b'{"en": "a", "ko": "b"}\r\n{"en": "c", "ko": "d"}\n',
                                     b'[{"en": "a", "ko": "b"},\r {"en": "c", "ko": "d"}]'])
def test_json_line_endings_and_arrays(tmp_path, content):
    path = tmp_path / "d.json"
    path.write_bytes(content)
    assert _read(path) == [("a", "b", 1), ("c", "d", 2)]


def test_a_csv_cell_over_the_csv_module_limit(tmp_path):
    import csv

    long = "가" * (csv.field_size_limit() + 10)
    path = tmp_path / "big.csv"
    path.write_text(f"en,ko\nHello,{long}\nBye,잘 가\n", encoding="utf-8")
    assert [(r["en"], len(r["ko"]), r.line) for r in read_rows(str(path), FIELDS)] == [
        ("Hello", len(long), 2), ("Bye", 3, 3)]


def test_a_device_is_not_a_data_file():
    with pytest.raises(DataError, match="/dev/null: is not a regular file"):
        read_rows("/dev/null", FIELDS)


def test_a_quoted_cell_over_several_lines_reports_its_first_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('en,ko\n"Line one\nline two",하나\nBye,\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_rows(str(path), FIELDS)
    assert (e.value.line, e.value.field) == (4, "ko")
    path.write_text('en,ko\n"Line one\nline two",하나\n', encoding="utf-8")
    assert _read(path) == [("Line one\nline two", "하나", 2)]


@pytest.mark.parametrize("text, number", [
    ("12", 12.0), ("-3", -3.0), ("1e3", 1000.0), ("$12.50", 12.5), ("1,299.99", 1299.99), ("12,345,678", 12345678.0),
])
def test_number_from_text(text, number):
    assert number_from_text(text) == number


@pytest.mark.parametrize("text", ["9,99", "1.299,99", "1,2,3", "12 dollars", ""])
def test_number_from_text_refuses_what_it_cannot_read_one_way(text):
    with pytest.raises(ValueError):
        number_from_text(text)


def test_negative_limit_and_last_are_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"en":"a","ko":"b"}\n{"en":"c","ko":"d"}\n')
    with pytest.raises(ConfigError, match=r"--limit must be 0 \(all rows\) or more, got -1"):
        read_rows(str(path), FIELDS, limit=-1)
    with pytest.raises(ConfigError, match="--last must be 0"):
        read_rows(str(path), FIELDS, last=-1)


def test_a_few_korean_sources_are_dropped_and_counted(tmp_path, capsys):
    from apps.translator.task import TASK

    rows = [{"en": f"Sentence number {i}.", "ko": f"문장 {i}."} for i in range(12)] + [{"en": "이건 한국어", "ko": "x"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = DataReport()
    kept = TASK.read(str(path), report)
    assert len(kept) == 12 and report.dropped == {"en: mostly Hangul (Korean in the English column)": 1}
    assert f"{path}: 1 row(s) dropped because the English is mostly Hangul (first: line 13)" in capsys.readouterr().err


@pytest.mark.parametrize("text, mostly", [("Hello", False), ("안녕하세요", True), ("Samsung 갤럭시 S24 phone", False),
                                          ("갤럭시 폰 S24", True), ("123 !?", False), ("ㅋㅋㅋㅋ lol", True), ("ㅋㅋㅋ lol", False)])
def test_mostly_hangul(text, mostly):
    from apps.translator.task import mostly_hangul

    assert mostly_hangul(text) is mostly


def test_report_adds_up_with_weights(tmp_path):
    from apps.translator.task import TASK

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(f'{{"en": "a{i}", "ko": "가{i}"}}\n' for i in range(10)))
    b.write_text("".join(f'{{"en": "b{i}", "ko": "나{i}"}}\n' for i in range(10)) + '{"en": "b0", "ko": "나0"}\n')
    report = DataReport()
    rows = TASK.read(f"{a},{b}", report, weights=[1.5, 0.3], seed=0)
    assert len(rows) == 15 + 3 and report.rows_repeated == 5
    assert report.dropped == {"duplicate": 1, "left out by data.weights": 7}
    assert report.rows_read + report.rows_repeated == len(rows) + sum(report.dropped.values())
    assert "repeated by data.weights 5" in report.summary()


def test_a_row_two_weighted_files_share_stays_with_the_heavier_file(tmp_path):
    """--data a,b --data.weights 0,1 asks for all of b: a's copy of a shared row must not remove b's."""
    from apps.translator.task import TASK

    from .conftest import PAIRS, write_jsonl

    rows = [{"en": e, "ko": k} for e, k in PAIRS]
    a = write_jsonl(tmp_path / "a.jsonl", rows[:3])
    b = write_jsonl(tmp_path / "b.jsonl", rows[:6])  # holds a's three rows too
    assert len(TASK.read(f"{a},{b}", DataReport(), weights=[0, 1])) == 6
    assert len(TASK.read(f"{a},{b}", DataReport(), weights=[1, 3])) == 18  # b's rows three times, shared ones too


@pytest.mark.parametrize("product", ["translator", "price_predictor"])
def test_shipped_splits_share_no_row(product):
    """A test row that is also a training row flatters every score measured on it."""
    import importlib
    from pathlib import Path

    from shared.data import overlap

    task = importlib.import_module(f"apps.{product}.task").TASK
    folder = Path(__file__).parent.parent / "data" / product
    train, valid, test = (task.read(str(folder / f"{name}.jsonl"), DataReport(), drop_duplicates=False)
                          for name in ("train", "valid", "test"))
    assert overlap(test, train) == overlap(valid, train) == overlap(test, valid) == 0
