"""The synthetic product-listing generator (data/price_predictor/generate.py): determinism, splits, shape,
and that the price follows what the text says. Pure Python, fast."""
from __future__ import annotations

import importlib.util
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from apps.price_predictor.curation import MAX_PRICE, MIN_PRICE, in_price_range

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"title", "description", "category", "price"}


def _load():
    spec = importlib.util.spec_from_file_location("price_generate", ROOT / "data/price_predictor/generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load()


@pytest.fixture(scope="module")
def detailed():
    return gen.generate_detailed(2000, 11)


@pytest.fixture(scope="module")
def sample(detailed):
    return [item for item, _ in detailed]


def test_same_seed_same_items_different_seed_different():
    a, b, c = gen.generate(300, 5), gen.generate(300, 5), gen.generate(300, 6)
    assert a == b
    assert a != c
    assert sum(x == y for x, y in zip(a, c)) < 5
    assert gen.generate(100, 5) == a[:100]  # item i depends only on (seed, i)


def test_files_are_byte_identical_for_a_seed(tmp_path):
    gen.main(["--seed", "3", "--n", "400", "--out", str(tmp_path / "a")])
    gen.main(["--seed", "3", "--n", "400", "--out", str(tmp_path / "b")])
    gen.main(["--seed", "4", "--n", "400", "--out", str(tmp_path / "c")])
    for name in ("train", "valid", "test"):
        a = (tmp_path / "a" / f"{name}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
        assert a != (tmp_path / "c" / f"{name}.jsonl").read_bytes()
    lines = (tmp_path / "a" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 320
    for line in lines:
        row = json.loads(line)
        assert set(row) == KEYS and isinstance(row["price"], float)


def test_default_count_and_split_sizes():
    items = gen.generate(gen.DEFAULT_N, gen.DEFAULT_SEED)
    assert gen.DEFAULT_N >= 3000 and len(items) == gen.DEFAULT_N
    parts = gen.split(items, gen.DEFAULT_SEED)
    assert {k: len(v) for k, v in parts.items()} == {"train": 2880, "valid": 180, "test": 540}
    assert sorted(map(json.dumps, sum(parts.values(), []))) == sorted(map(json.dumps, items))
    assert parts == gen.split(items, gen.DEFAULT_SEED)


def test_prices_are_clipped_to_the_range_the_task_keeps():
    """The generator runs on the standard library alone, so it holds its own copy of the task's price range."""
    assert (gen.MIN_PRICE, gen.MAX_PRICE) == (MIN_PRICE, MAX_PRICE)


def test_shape_categories_prices_and_text(sample):
    assert len({it["category"] for it in sample}) >= 10
    for it in sample:
        assert set(it) == KEYS
        assert isinstance(it["price"], float) and in_price_range(it["price"])
        assert round(it["price"], 2) == it["price"]
        assert 40 <= len(it["description"].split()) <= 110
        assert it["title"] and "\n" not in it["title"]
    assert len({it["title"] for it in sample}) > 0.9 * len(sample)
    assert len({it["description"] for it in sample}) == len(sample)


def test_everything_that_drives_the_price_is_in_the_text(detailed):
    tier_words = {"budget": "budget", "mid": "mid-range", "premium": "premium"}
    for item, a in detailed:
        title, desc = item["title"], item["description"]
        text = (title + " " + desc).lower()
        assert title.startswith(a["brand"]) and a["type"] in title and a["size"] in title
        assert gen.BRAND_TIERS[a["brand"]] == a["tier"]
        for tier, word in tier_words.items():  # the tier is stated, and only the right one
            assert (word in desc.lower()) == (tier == a["tier"]), (tier, desc)
        assert a["material"].lower() in text
        for _label, phrase in a["features"]:
            assert phrase.lower() in desc.lower()
        assert a["features"][0][0] in title


def test_price_is_the_documented_process(detailed):
    residuals = [math.log(item["price"]) - gen.expected_log_price(a) for item, a in detailed
                 if MIN_PRICE < item["price"] < MAX_PRICE]
    assert len(residuals) > 0.97 * len(detailed)
    assert abs(statistics.mean(residuals)) < 0.03
    assert 0.22 < statistics.pstdev(residuals) < 0.28  # the noise, sigma 0.25


def test_docstring_holds_the_coefficient_table():
    assert gen.describe() in gen.__doc__
    assert "budget -0.40, mid 0.00, premium +0.45" in gen.__doc__


def test_premium_brands_cost_clearly_more_than_budget_ones(sample):
    by_type = defaultdict(lambda: defaultdict(list))
    for it in sample:
        desc = it["description"].lower()
        tier = "premium" if "premium" in desc else "budget" if "budget" in desc else "mid"
        ptype = next(t[0] for t in gen.CATALOG[it["category"]]["types"] if t[0] in it["title"])
        by_type[ptype][tier].append(math.log(it["price"]))
    gaps = {t: statistics.mean(v["premium"]) - statistics.mean(v["budget"])
            for t, v in by_type.items() if len(v["premium"]) >= 3 and len(v["budget"]) >= 3}
    assert len(gaps) >= 50
    assert statistics.mean(gaps.values()) > 0.6  # the documented gap is 0.85 in log price (2.3x)
    assert sum(g > 0 for g in gaps.values()) >= 0.9 * len(gaps)
    tv = by_type["Smart TV"]
    assert statistics.mean(tv["premium"]) - statistics.mean(tv["budget"]) > 0.4


def test_bigger_sizes_cost_more(detailed):
    """Per product type: the largest size option stated in the title costs more than the smallest."""
    options = {t[0]: [label for label, _ in t[2]["options"]] for c in gen.CATALOG.values() for t in c["types"]}
    logs = defaultdict(lambda: defaultdict(list))
    for item, a in detailed:
        logs[a["type"]][a["size"]].append(math.log(item["price"]))
    gaps = [statistics.mean(logs[t][opts[-1]]) - statistics.mean(logs[t][opts[0]])
            for t, opts in options.items() if logs[t][opts[0]] and logs[t][opts[-1]]]
    assert len(gaps) >= 60
    assert statistics.mean(gaps) > 0.4
    assert sum(g > 0 for g in gaps) >= 0.75 * len(gaps)
