"""Curation of Amazon Reviews 2023 metadata rows and simple price rows (apps/price_predictor/curation.py),
on a hand-written fixture in the real Amazon format. Standard library only."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.price_predictor import curation as cur

FIXTURE = Path(__file__).parent / "fixtures" / "amazon_meta_sample.jsonl"
EXPECTED_DROPS = {"bad json": 1, "no price": 2, "no title": 1, "price out of range": 3, "too little text": 1}


@pytest.fixture(scope="module")
def curated():
    return cur.read_amazon_meta(FIXTURE)


def test_kept_items_and_exact_drop_counts(curated):
    items, stats = curated
    assert stats.read == 12 and stats.kept == 4 == len(items)
    assert dict(stats.dropped) == EXPECTED_DROPS
    assert stats.read == stats.kept + sum(stats.dropped.values())  # nothing dropped silently
    assert stats.to_dict() == {"read": 12, "kept": 4, "dropped": EXPECTED_DROPS}
    json.dumps(stats.to_dict())
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
    items, _ = cur.read_amazon_meta(FIXTURE, category="Home")
    assert {it["category"] for it in items} == {"Home"}


def test_limit_reads_only_the_first_rows():
    items, stats = cur.read_amazon_meta(FIXTURE, limit=3)
    assert stats.read == 3 and len(items) == 1 and dict(stats.dropped) == {"no price": 2}


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
    items, stats = cur.read_amazon_meta(path)
    assert items == curated[0] and stats.to_dict() == curated[1].to_dict()


@pytest.mark.parametrize("value, expected", [
    (19.99, (19.99, None)), (5, (5.0, None)), ("$1,299.99", (1299.99, None)), (" 12.50 ", (12.5, None)),
    (None, (None, "no price")), ("—", (None, "no price")), ("None", (None, "no price")), ("", (None, "no price")),
    ("abc", (None, "price not a number")), (float("nan"), (None, "price not a number")),
    ("NaN", (None, "price not a number")), (True, (None, "price not a number")),
])
def test_parse_price(value, expected):
    assert cur.parse_price(value) == expected


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


SIMPLE = [
    {"title": "Good lamp", "description": "A lamp.", "category": "Home", "price": 24.0},
    {"title": "String price", "description": "x", "price": "$1,049.00"},
    {"title": "Cheap but fine", "description": "x", "price": "12.5"},
    {"title": "Negative", "description": "x", "price": -3},
    {"title": "Zero", "description": "x", "price": 0},
    {"title": "Not a number", "description": "x", "price": "NaN"},
    {"title": "Text", "description": "x", "price": "ask the seller"},
    {"title": "Missing price", "description": "x"},
    {"title": "Too dear", "description": "x", "price": 1200},
    {"title": "", "description": "no title here", "price": 10},
]
SIMPLE_DROPS = {"no price": 1, "price out of range": 4, "price not a number": 2, "no title": 1}


def test_read_simple_rows_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SIMPLE) + "{not json\n", encoding="utf-8")
    items, stats = cur.read_simple_rows(path)
    assert [(it["title"], it["price"], it["category"]) for it in items] == [("Good lamp", 24.0, "Home"),
                                                                             ("Cheap but fine", 12.5, "")]
    assert dict(stats.dropped) == dict(SIMPLE_DROPS, **{"bad json": 1})
    assert stats.read == len(SIMPLE) + 1 == stats.kept + sum(stats.dropped.values())


def test_read_simple_rows_csv(tmp_path):
    path = tmp_path / "rows.csv"
    lines = ["title,description,category,price"] + [
        ",".join(['"' + str(r.get(k, "")).replace('"', '""') + '"' for k in ("title", "description", "category",
                                                                           "price")]) for r in SIMPLE]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")
    items, stats = cur.read_simple_rows(path)
    assert [(it["title"], it["price"]) for it in items] == [("Good lamp", 24.0), ("Cheap but fine", 12.5)]
    assert dict(stats.dropped) == SIMPLE_DROPS and stats.read == len(SIMPLE)
