"""The price rules of the data, and the reader of Amazon Reviews 2023 metadata JSONL.

The Amazon curation follows the Item class of the "LLM Engineering" course (ed-donner):

* the price must parse as a number (floats, or strings such as "$1,299.99"; see price_from_text for commas);
  null, "", "—" and "None" count as "no price"; other text, NaN and booleans as "price not a number", and a
  comma that is neither a thousands separator nor a two-digit decimal comma as "price with an ambiguous comma";
* only MIN_PRICE <= price <= MAX_PRICE is kept ("price out of range"; the same range is applied to plain
  title/description/price files by the task);
* the title is required ("no title");
* the text is the description lines, then the feature lines, then the product details as "Key: value"
  lines without the boilerplate keys in BOILERPLATE_DETAIL_KEYS;
* scrub(): boilerplate phrases (BOILERPLATE_PHRASES) are removed, runs of whitespace, square brackets,
  double quotes, braces and 【】 collapse to one space, and "words" of PART_NUMBER_MIN_CHARS or more
  characters that contain a digit (part numbers, model codes) are dropped; the title is scrubbed too;
* the scrubbed text must have at least MIN_CHARS characters ("too little text");
* it is then cut to MAX_WORDS whitespace words and at most MAX_CHARS characters, on a word boundary
  (the course cuts to 160 tokens; about 120 words of product copy is about that many tokens).

Every row read is either kept or counted in the DataReport's `dropped` under a short reason, never dropped
silently. Output items are {"title", "description", "category", "price"}.
"""
from __future__ import annotations

import json
import math
import re
from collections import deque
from itertools import islice
from pathlib import Path

from shared.data import DataError, DataReport, Unreadable

MIN_PRICE, MAX_PRICE = 0.5, 999.49
MIN_CHARS = 300            # scrubbed text shorter than this is dropped ("too little text")
MAX_WORDS = 120            # the description is cut to this many whitespace words (~160 tokens) ...
MAX_CHARS = 1000           # ... and to at most this many characters, on a word boundary
PART_NUMBER_MIN_CHARS = 7  # "words" this long or longer that contain a digit are removed

BOILERPLATE_DETAIL_KEYS = (
    "Batteries Included?",
    "Batteries Required?",
    "Battery Cell Composition",
    "By Clicking on the link",
    "Date First Available",
    "Best Sellers Rank",
    "Customer Reviews",
    "Manufacturer recommended age",
    "Discontinued by manufacturer",
    "ASIN",
    "Item model number",
    "UPC",
)
BOILERPLATE_PHRASES = (
    "By clicking on the link",
    "Make sure this fits by entering your model number.",
    "See more product details",
    "From the manufacturer",
    "Product Description",
    "About this item",
    "Click here",
)
NO_PRICE_STRINGS = {"", "—", "–", "-", "none", "null", "n/a", "na"}

REASON_BAD_JSON = "bad json"
REASON_NO_PRICE = "no price"
REASON_NOT_A_NUMBER = "price not a number"
REASON_AMBIGUOUS = "price with an ambiguous comma"
REASON_OUT_OF_RANGE = "price out of range"
REASON_NO_TITLE = "no title"
REASON_TOO_LITTLE_TEXT = "too little text"

_CURRENCY = re.compile(r"^(?:US\s*\$|\$|USD\s*|€|EUR\s*|£)|\s*(?:USD|EUR|€|\$)$", re.IGNORECASE)
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 1,299 and 1,299.99
_DECIMAL_COMMA = re.compile(r"\d+,\d{2}")  # 9,99 and 1299,00
_JUNK = re.compile(r'[\s\[\]"“”{}【】]+')
_PHRASES = re.compile("|".join(re.escape(p) for p in sorted(BOILERPLATE_PHRASES, key=len, reverse=True)),
                      re.IGNORECASE)
_BOILERPLATE_KEYS = {k.casefold() for k in BOILERPLATE_DETAIL_KEYS}


class AmbiguousPrice(Unreadable):
    """A price whose comma could be a thousands separator or a decimal comma ("1.299,99", "12,5")."""


def price_from_text(text: str) -> float:
    """A price written as text -> float. A comma is read two ways only, so "9,99" never becomes 999.00:
    as thousands separators in groups of three ("1,299", "$1,299.99"), or as a decimal comma when it is the only
    comma, exactly two digits follow it and there is no point ("9,99" -> 9.99). Any other comma ("1.299,99",
    "12,5", "1,2345") raises AmbiguousPrice; text that is not a number raises ValueError. A currency sign or
    code ($, US$, USD, €, EUR, £) before or after is ignored."""
    number = _CURRENCY.sub("", text.strip()).strip()
    if "," not in number:
        return float(number)
    if _THOUSANDS.fullmatch(number):
        return float(number.replace(",", ""))
    if _DECIMAL_COMMA.fullmatch(number):
        return float(number.replace(",", "."))
    if not re.fullmatch(r"[\d.,]+", number):
        raise ValueError(text)
    raise AmbiguousPrice(f"{text.strip()!r} is ambiguous: its comma is neither a thousands separator (1,299.99) "
                         "nor a decimal comma before exactly two digits (9,99); write prices with a decimal point")


def price_from_value(value) -> tuple[float | None, str | None]:
    """A data file's price value (a number, or text read by price_from_text) -> (price, None), or (None, reason)
    with reason "no price", "price not a number" or "price with an ambiguous comma". The range is not checked
    here (see check_price)."""
    if value is None:
        return None, REASON_NO_PRICE
    if isinstance(value, bool):
        return None, REASON_NOT_A_NUMBER
    if isinstance(value, (int, float)):
        price = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.casefold() in NO_PRICE_STRINGS:
            return None, REASON_NO_PRICE
        try:
            price = price_from_text(text)
        except AmbiguousPrice:
            return None, REASON_AMBIGUOUS
        except ValueError:
            return None, REASON_NOT_A_NUMBER
    else:
        return None, REASON_NOT_A_NUMBER
    if math.isnan(price):
        return None, REASON_NOT_A_NUMBER
    return price, None


def in_price_range(price: float) -> bool:
    return MIN_PRICE <= price <= MAX_PRICE


def check_price(value) -> tuple[float | None, str | None]:
    """price_from_value, then the range (else "price out of range")."""
    price, reason = price_from_value(value)
    if reason:
        return None, reason
    if not in_price_range(price):
        return None, REASON_OUT_OF_RANGE
    return price, None


def scrub(text: str) -> str:
    """Remove boilerplate phrases, collapse whitespace/brackets/quotes/braces/【】 to one space and drop
    part-number-like words (PART_NUMBER_MIN_CHARS+ characters with a digit)."""
    text = _PHRASES.sub(" ", text)
    text = _JUNK.sub(" ", text).strip()
    text = text.replace(" ,", ",").replace(",,,", ",").replace(",,", ",")
    words = [w for w in text.split(" ")
             if len(w) < PART_NUMBER_MIN_CHARS or not any(c.isdigit() for c in w)]
    return " ".join(w for w in words if w)


def truncate(text: str, max_words: int = MAX_WORDS, max_chars: int = MAX_CHARS) -> str:
    """At most max_words whitespace words and max_chars characters, cut on a word boundary."""
    text = " ".join(text.split()[:max_words])
    if len(text) > max_chars:
        cut = text[:max_chars + 1]
        text = cut[:cut.rfind(" ")] if " " in cut else text[:max_chars]
    return text.rstrip()


def _lines(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _flat(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_flat(v) for v in value)
    return str(value)


def details_lines(details) -> list[str]:
    """The product details as "Key: value" lines, without BOILERPLATE_DETAIL_KEYS. Accepts a dict or, as
    in the Hugging Face copy of the data set, a JSON string of one."""
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except json.JSONDecodeError:
            return _lines(details)
    if not isinstance(details, dict):
        return _lines(details)
    out = []
    for key, value in details.items():
        name = str(key).strip().rstrip(":").strip()
        if any(name.casefold().startswith(k) for k in _BOILERPLATE_KEYS):  # "By Clicking on the link ..."
            continue
        if value is None or value == "" or value == [] or value == {}:
            continue
        out.append(f"{name}: {_flat(value)}")
    return out


def curate_amazon_row(raw: dict, category: str | None = None) -> tuple[dict | None, str | None]:
    """(item, None) for a row worth keeping, else (None, reason)."""
    price, reason = check_price(raw.get("price"))
    if reason:
        return None, reason
    title = scrub(str(raw.get("title") or ""))
    if not title:
        return None, REASON_NO_TITLE
    content = "\n".join(_lines(raw.get("description")) + _lines(raw.get("features"))
                        + details_lines(raw.get("details")))
    text = scrub(content)
    if len(text) < MIN_CHARS:
        return None, REASON_TOO_LITTLE_TEXT
    cat = category if category is not None else str(raw.get("main_category") or "")
    return {"title": title, "description": truncate(text), "category": cat, "price": price}, None


def _json_objects(path: Path):
    """Yield (line number, the parsed object or None for a line that is not a JSON object) for each non-blank
    line; BOM and CRLF tolerated, bytes that are not UTF-8 a DataError naming the line (replacing them would
    put "\ufffd" in titles without a word)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip().lstrip("\ufeff")
            except UnicodeDecodeError as e:
                raise DataError(path, n, "", f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "re-save the file as UTF-8") from None
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            yield n, obj if isinstance(obj, dict) else None


def read_amazon_meta(path, report: DataReport | None = None, category: str | None = None, limit: int = 0,
                     last: int = 0) -> list[dict]:
    """The items of `amazon_rows`, without their line numbers."""
    return [item for _, item in amazon_rows(path, report, category, limit, last)]


def amazon_rows(path, report: DataReport | None = None, category: str | None = None, limit: int = 0,
                last: int = 0) -> list[tuple[int, dict]]:
    """Curated items from an Amazon Reviews 2023 metadata JSONL file, counted in `report` as read_rows counts a
    plain file. limit: only the first N rows (non-blank lines) of the file; last: only the last N rows; 0 reads
    all. Blank lines are not rows; a line that is not a JSON object is counted as "bad json". Each item comes
    with its line number in the file."""
    report = report if report is not None else DataReport()
    objects = islice(_json_objects(Path(path)), limit or None)
    if last:  # a bounded queue keeps memory flat on a metadata file of millions of lines
        objects = deque(objects, maxlen=last)
    items = []
    for n, obj in objects:
        report.rows_read += 1
        item, reason = curate_amazon_row(obj, category) if obj is not None else (None, REASON_BAD_JSON)
        if item is None:
            report.drop(reason)
            continue
        items.append((n, item))
    report.files.append(str(path))
    return items
