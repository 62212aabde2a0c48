import pytest

from shared.data import DataError, DataReport, Field, percentiles, read_rows, split

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
