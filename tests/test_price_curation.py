"""Curation of Amazon Reviews 2023 metadata rows (apps/price_predictor/curation.py), on a hand-written fixture
in the real Amazon format."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.price_predictor import curation as cur
from shared.data import DataReport

FIXTURE = Path(__file__).parent / "fixtures" / "amazon_meta_sample.jsonl"
EXPECTED_DROPS = {"bad json": 1, "no price": 2, "no title": 1, "price out of range": 3, "too little text": 1}


def _read(path=FIXTURE, **kwargs) -> tuple[list[dict], DataReport]:
    report = DataReport()
    return cur.read_amazon_meta(path, report, **kwargs), report


@pytest.fixture(scope="module")
def curated():
    return _read()


def test_kept_items_and_exact_drop_counts(curated):
    items, report = curated
    assert report.rows_read == 12 and len(items) == 4
    assert dict(report.dropped) == EXPECTED_DROPS
    assert report.rows_read == len(items) + sum(report.dropped.values())  # nothing dropped silently
    assert report.files == [str(FIXTURE)]
    json.dumps(report.to_dict())
    assert [(it["title"][:20], it["price"], it["category"]) for it in items] == [
        ("Brindlecraft Bamboo ", 24.99, "Amazon Home"),
        ("Vantro 20V Cordless ", 129.99, "Tools & Home Improvement"),
        ("Hollowmere Stoneware", 32.5, "Amazon Home"),
        ("Summerfell Insulated", 27.95, "Sports & Outdoors"),
    ]
    for it in items:
        assert set(it) == {"title", "description", "category", "price"}
        assert len(it["description"]) >= 300 and "\n" not in it["description"]


def test_category_argument_overrides_main_category():
    items, _ = _read(category="Home")
    assert {it["category"] for it in items} == {"Home"}


def test_limit_reads_only_the_first_rows():
    items, report = _read(limit=3)
    assert report.rows_read == 3 and len(items) == 1 and dict(report.dropped) == {"no price": 2}


def test_last_reads_only_the_last_rows_of_the_file(curated):
    """As for a plain file, `last` counts rows of the file, so `--limit TOTAL-N` and `--last N` never share one."""
    items, report = _read(last=2)
    assert report.rows_read == 2 == len(items) + sum(report.dropped.values())
    assert items == curated[0][-len(items):]
    first, _ = _read(limit=10)
    assert not {it["title"] for it in first} & {it["title"] for it in items}


def test_part_numbers_are_removed(curated):
    drill = curated[0][1]
    assert drill["title"] == "Vantro 20V Cordless Drill Kit"
    for code in ("DRL20V5000X", "BAT20V4AH7", "VT-DRL20V-KIT2"):
        assert code not in drill["title"] + drill["description"]
    assert "Brushless motor" in drill["description"] and "Voltage: 20 Volts" in drill["description"]
    assert "Item model number" not in drill["description"]


def test_boilerplate_detail_keys_are_removed(curated):
    mugs = curated[0][2]["description"]
    for gone in ("Best Sellers Rank", "Customer Reviews", "Date First Available", "June 14, 2021",
                 "Batteries", "Manufacturer recommended age", "51234"):
        assert gone not in mugs
    assert "Material: Stoneware" in mugs
    board = curated[0][0]["description"]
    assert "Date First Available" not in board and "Material: Bamboo" in board


def test_truncation_limit_is_honoured(curated):
    bottle = curated[0][3]["description"]
    raw = json.loads(FIXTURE.read_text(encoding="utf-8").splitlines()[10])
    assert len(" ".join(raw["description"]).split()) > cur.MAX_WORDS  # the fixture row really is too long
    assert len(bottle.split()) == cur.MAX_WORDS and len(bottle) <= cur.MAX_CHARS
    assert bottle.startswith("Whether you are heading to the gym")
    for it in curated[0]:
        assert len(it["description"].split()) <= cur.MAX_WORDS and len(it["description"]) <= cur.MAX_CHARS


def test_truncate_and_scrub_units():
    long = " ".join(["abcdefghij"] * 200)
    cut = cur.truncate(long, max_words=500, max_chars=1000)
    assert len(cut) <= 1000 and cut.endswith("abcdefghij") and len(cut) > 950
    assert cur.truncate("one two three", max_words=2) == "one two"
    assert cur.scrub('Size: [Large]  "Blue" {x}【New】 Model ABC12345 fits 2024') == "Size: Large Blue x New Model fits 2024"
    assert cur.scrub("red , green,, blue") == "red, green, blue"


def test_bom_and_crlf_are_tolerated(tmp_path, curated):
    path = tmp_path / "meta.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + FIXTURE.read_text(encoding="utf-8").replace("\n", "\r\n").encode("utf-8")
                     + b"\r\n\r\n")
    items, report = _read(path)
    assert items == curated[0] and report.dropped == curated[1].dropped
    assert report.rows_read == curated[1].rows_read


@pytest.mark.parametrize("value, expected", [
    (19.99, (19.99, None)), (5, (5.0, None)), ("$1,299.99", (1299.99, None)), (" 12.50 ", (12.5, None)),
    (None, (None, "no price")), ("—", (None, "no price")), ("None", (None, "no price")), ("", (None, "no price")),
    ("abc", (None, "price not a number")), (float("nan"), (None, "price not a number")),
    ("NaN", (None, "price not a number")), (True, (None, "price not a number")),
])
def test_price_from_value(value, expected):
    assert cur.price_from_value(value) == expected


@pytest.mark.parametrize("value, reason", [(0.3, "price out of range"), (1500, "price out of range"),
                                           ("$1,299.99", "price out of range"), (0, "price out of range"),
                                           (-4, "price out of range"), ("inf", "price out of range")])
def test_check_price_range(value, reason):
    assert cur.check_price(value) == (None, reason)
    assert cur.check_price(0.5) == (0.5, None) and cur.check_price(999.49) == (999.49, None)


def test_curate_row_directly():
    raw = json.loads(FIXTURE.read_text(encoding="utf-8").splitlines()[0])
    item, reason = cur.curate_amazon_row(raw)
    assert reason is None and item["price"] == 24.99
    raw["details"] = json.dumps(raw["details"])  # the Hugging Face copy stores details as a JSON string
    assert cur.curate_amazon_row(raw) == (item, None)
    assert cur.curate_amazon_row(dict(raw, price="—")) == (None, "no price")
    assert cur.curate_amazon_row(dict(raw, title=None)) == (None, "no title")



def test_an_amazon_file_read_for_training_drops_duplicates_keeps_line_numbers_and_stops_on_bad_bytes(tmp_path):
    from apps.price_predictor.task import TASK
    from shared.data import DataError

    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    path = tmp_path / "meta.jsonl"
    path.write_bytes(b"".join(lines + lines))  # every item twice
    report = DataReport()
    rows = TASK.read(str(path), report)
    assert len(rows) == 4 and report.dropped["duplicate"] == 4  # as in a plain file
    once = [row.line for row in TASK.read(str(FIXTURE), DataReport())]
    assert [row.line for row in rows] == once and max(once) > len(once)  # the file's own line numbers
    path.write_bytes(b"".join(lines) + b'{"title": "Caf\xe9 grinder"}\n')  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=rf"line {len(lines) + 1}: not valid UTF-8 \(byte 0xe9"):
        TASK.read(str(path), DataReport())
