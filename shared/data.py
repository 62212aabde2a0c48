"""Read training data (JSONL, CSV, TSV or a Hugging Face dataset), validate every row, and report on it.

Policy (per field, documented in docs/data.md): a row that breaks the schema (missing field, wrong type,
empty text, bad bytes, bad JSON) stops the run *before* any training with a DataError that names the file,
the line and the field; exact duplicates and rows that do not fit max_length are dropped and counted in the
data report, never silently.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class DataError(ValueError):
    """A bad row: names the file, the line and the field so the user can fix it."""

    def __init__(self, file: str, line: int | str, field: str, problem: str):
        self.file, self.line, self.field, self.problem = str(file), line, field, problem
        where = f"{file}, line {line}" if line != "" else str(file)
        super().__init__(f"{where}, field '{field}': {problem}" if field else f"{where}: {problem}")


@dataclass(frozen=True)
class Field:
    name: str
    kind: type = str  # str or float
    aliases: tuple = ()
    required: bool = True
    drop_bad: bool = False  # True: a bad value drops the row (counted by reason) instead of stopping the run


@dataclass
class Row:
    values: dict
    file: str
    line: int

    def __getitem__(self, key):
        return self.values[key]


@dataclass
class DataReport:
    """What happened to the data: counts by outcome, and token-length percentiles of what was used."""
    files: list = field(default_factory=list)
    rows_read: int = 0
    rows_used: int = 0
    rows_held_out: int = 0  # split off for validation: rows_read = rows_used + dropped + rows_held_out
    dropped: Counter = field(default_factory=Counter)
    token_lengths: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def to_dict(self) -> dict:
        return {"files": self.files, "rows_read": self.rows_read, "rows_used": self.rows_used,
                "rows_held_out": self.rows_held_out, "dropped": dict(self.dropped),
                "token_lengths": self.token_lengths, "checks": self.checks}

    def summary(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        lengths = " ".join(f"{k}={v}" for k, v in self.token_lengths.items())
        held = f", held out for validation {self.rows_held_out}" if self.rows_held_out else ""
        return f"rows read {self.rows_read}, used {self.rows_used}{held}, dropped ({drops}); tokens {lengths}"


def percentiles(values: list[int]) -> dict:
    if not values:
        return {}
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]  # noqa: E731  nearest-rank percentile
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1], "mean": round(sum(s) / len(s), 1)}


# ---------------------------------------------------------------- reading

def _decode_lines(path: Path) -> list[tuple[int, str]]:
    """Decode a file line by line so a bad byte is reported with its line; tolerate a BOM and CRLF."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(path, 1, "", "is UTF-16 (it starts with a UTF-16 byte-order mark); re-save the file as UTF-8")
    out = []
    lines = raw.split(b"\n")
    for i, chunk in enumerate(lines, start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(path, i, _field_at(path, lines[0], chunk, e.start),
                            f"not valid UTF-8 (byte 0x{chunk[e.start]:02x} at column {e.start + 1}); "
                            "re-save the file as UTF-8") from None
        out.append((i, text.rstrip("\r")))
    return out


def _field_at(path: Path, header: bytes, line: bytes, start: int) -> str:
    """Best effort: the name of the field that holds the bad byte at `start` of `line` ('' if unknown)."""
    bad = line[:start].decode("utf-8", "replace") + "\udcff"  # a marker where the bad byte is
    text = bad + line[start + 1:].decode("utf-8", "replace")
    try:
        if path.suffix.lower() in (".csv", ".tsv", ".tab"):
            names = next(csv.reader([header.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")],
                                    delimiter="," if path.suffix.lower() == ".csv" else "\t"))
            cells = next(csv.reader([text.rstrip("\r")], delimiter="," if path.suffix.lower() == ".csv" else "\t"))
            return next((n for n, c in zip(names, cells) if "\udcff" in c), "")
        obj = json.loads(text)
        return next((str(k) for k, v in obj.items() if isinstance(v, str) and "\udcff" in v), "")
    except (ValueError, StopIteration, AttributeError):
        return ""


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for line_no, text in _decode_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, "", f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, line_no, "", f"expected a JSON object, got {type(obj).__name__}")
        rows.append((line_no, obj))
    return rows


def _read_delimited(path: Path, delimiter: str) -> list[tuple[int, dict]]:
    lines = _decode_lines(path)
    text = "\n".join(t for _, t in lines)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = []
    for obj in reader:
        if not any((v or "").strip() for k, v in obj.items() if k is not None):
            continue
        if None in obj:  # more cells than header columns
            raise DataError(path, reader.line_num, "", f"{len(obj[None])} more cell(s) than the header has columns")
        rows.append((reader.line_num, obj))
    return rows


def _read_hub(dataset_id: str) -> list[tuple[int, dict]]:
    name, _, split = dataset_id.partition(":")
    try:
        import datasets
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; the user needs the message
        raise DataError(dataset_id, "", "", f"not a local file, and loading it as a Hugging Face dataset failed: "
                                            f"{e.__class__.__name__}: {str(e).splitlines()[0][:200]}") from None
    return [(i + 1, dict(r)) for i, r in enumerate(ds)]


def read_raw(source: str) -> list[tuple[int, dict]]:
    """(line number, raw mapping) for each non-blank row of a file or dataset id."""
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            return _read_jsonl(path)
        if suffix == ".csv":
            return _read_delimited(path, ",")
        if suffix in (".tsv", ".tab"):
            return _read_delimited(path, "\t")
        raise DataError(path, "", "", "unknown file type; use .jsonl, .csv or .tsv")
    if path.exists():
        raise DataError(path, "", "", "is a folder, expected a .jsonl, .csv or .tsv file")
    if source.startswith((".", "/", "~")) or Path(source).suffix.lower() in (".jsonl", ".csv", ".tsv", ".json"):
        raise DataError(source, "", "", "file not found")
    return _read_hub(source)


def _lookup(raw: dict, f: Field) -> tuple[bool, Any]:
    by_lower = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    for key in (f.name, *f.aliases):
        if key.lower() in by_lower:
            return True, by_lower[key.lower()]
    return False, None


def _check(value: Any, f: Field) -> tuple[Any, str | None]:
    """Return (clean value, problem or None)."""
    if value is None:
        return None, "is missing (null)"
    if f.kind is str:
        if not isinstance(value, str):
            return None, f"expected text, got {type(value).__name__} {value!r:.40}"
        if not value.strip():
            return None, "is empty"
        return value.strip(), None
    if f.kind is float:
        if isinstance(value, bool):
            return None, f"expected a number, got {value!r}"
        try:
            number = float(str(value).replace(",", "").lstrip("$")) if isinstance(value, str) else float(value)
        except ValueError:
            return None, f"expected a number, got {value!r:.40}"
        if not math.isfinite(number):
            return None, f"expected a finite number, got {value!r}"
        return number, None
    return value, None


def read_rows(source: str, fields: list[Field], report: DataReport | None = None,
              limit: int = 0, drop_duplicates: bool = True, last: int = 0) -> list[Row]:
    """Read and validate rows; the first bad row raises DataError (nothing is trained yet, nothing is lost).

    limit: only the first N rows of the file; last: only the last N rows (for held-out tails)."""
    raw_rows = read_raw(source)
    if not raw_rows:
        raise DataError(source, "", "", "contains no rows")
    names = ", ".join(f.name for f in fields)
    rows, seen = [], set()
    if limit:  # the first N rows of the file, duplicates included, so a line range means what it says
        raw_rows = raw_rows[:limit]
    if last:
        raw_rows = raw_rows[-last:]
    for line, raw in raw_rows:
        if report is not None:
            report.rows_read += 1
        values = {}
        for f in fields:
            found, value = _lookup(raw, f)
            if not found:
                if not f.required:
                    continue
                if f.drop_bad:
                    values = None
                    if report is not None:
                        report.drop(f"{f.name}: is missing")
                    break
                hint = f" (also accepted: {', '.join(f.aliases)})" if f.aliases else ""
                raise DataError(source, line, f.name, f"is missing{hint}; the row has: "
                                                      f"{', '.join(map(str, raw)) or 'nothing'}. Expected: {names}")
            if not f.required and (value is None or (isinstance(value, str) and not value.strip())):
                values[f.name] = None  # an optional field may be present but empty
                continue
            clean, problem = _check(value, f)
            if problem:
                if not f.drop_bad:
                    raise DataError(source, line, f.name, problem)
                values = None
                if report is not None:
                    report.drop(f"{f.name}: {problem.split(', got')[0]}")  # e.g. "price: expected a number"
                break
            values[f.name] = clean
        if values is None:
            continue
        key = tuple(values.get(f.name) for f in fields)
        if drop_duplicates and key in seen:
            if report is not None:
                report.drop("duplicate")
            continue
        seen.add(key)
        rows.append(Row(values, str(source), line))
    if report is not None:
        report.files.append(str(source))
    return rows


def split(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle-split: (train, held-out)."""
    if not 0 < fraction < 1 or len(rows) < 2:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(rows) * fraction))
    held = set(order[:n_held])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def share(rows: list[Row], key: str, test: Callable[[str], bool]) -> float:
    """Fraction of rows whose field passes a check (for charset/language checks in the data report)."""
    return round(sum(1 for r in rows if test(r[key])) / len(rows), 4) if rows else 0.0
