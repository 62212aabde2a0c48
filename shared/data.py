"""Read training data (JSONL, JSON, CSV, TSV or a Hugging Face dataset), validate every row, and report on it.

Policy (per field, documented in docs/data.md): a row that breaks the schema (missing field, wrong type,
empty text, bad bytes, bad JSON, a chat row that is not one exchange) stops the run *before* any training with
a DataError that names the file, the line and the field; exact duplicates and rows that do not fit max_length
are dropped and counted in the data report, never silently.

One reader takes what people's tools write: UTF-8 with or without a BOM, UTF-16/32 with a BOM (Excel's
"Unicode text"), Korean CP949/EUC-KR (detected and named in the log), LF, CRLF or CR-only line endings (old
Mac Excel), CSV cells of any size, JSON Lines or one JSON array, and chat-format rows (OpenAI `messages`,
ShareGPT `conversations`, Alpaca `instruction`/`input`/`output`), detected per file.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError
from .log import log


class DataError(ValueError):
    """A bad row: names the file, the line and the field so the user can fix it."""

    def __init__(self, file: str, line: int | str, field: str, problem: str):
        self.file, self.line, self.field, self.problem = str(file), line, field, problem
        where = f"{file}, line {line}" if line != "" else str(file)
        super().__init__(f"{where}, field '{field}': {problem}" if field else f"{where}: {problem}")


class Unreadable(ValueError):
    """Raised by a Field's parser for a value that must stop the run even in a drop_bad field, because reading
    it either way could be wrong (e.g. "1.299,99"): dropping it would hide a file-wide format problem."""


def number_from_text(text: str) -> float:
    """'12', '-3', '1e3', '$12.50', '1,299.99' (commas only as thousands separators) -> float; ValueError else."""
    text = text.strip().removeprefix("$").strip()
    if "," in text:
        if not re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
            raise ValueError(text)
        text = text.replace(",", "")
    return float(text)


@dataclass(frozen=True)
class Field:
    name: str
    kind: type = str  # str or float
    aliases: tuple = ()
    required: bool = True
    drop_bad: bool = False  # True: a bad value drops the row (counted by reason) instead of stopping the run
    parse: Callable[[str], float] | None = None  # text -> number for float fields (default: number_from_text)


@dataclass
class Row:
    values: dict
    file: str
    line: int

    def __getitem__(self, key):
        return self.values[key]


@dataclass
class DataReport:
    """What happened to the data: counts by outcome, and token-length percentiles of what was used.

    rows_read + rows_repeated = rows_used + sum(dropped) + rows_held_out, where rows_repeated counts the extra
    uses of rows that a data.weights above 1 repeats (rows a weight below 1 leaves out are in `dropped`)."""
    files: list = field(default_factory=list)
    rows_read: int = 0
    rows_used: int = 0
    rows_held_out: int = 0  # split off for validation
    rows_repeated: int = 0
    dropped: Counter = field(default_factory=Counter)
    token_lengths: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    formats: dict = field(default_factory=dict)  # file -> row format ("columns", "openai messages", ...)
    encodings: dict = field(default_factory=dict)  # file -> text encoding, for files that are not UTF-8

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def to_dict(self) -> dict:
        return {"files": self.files, "rows_read": self.rows_read, "rows_used": self.rows_used,
                "rows_held_out": self.rows_held_out, "rows_repeated": self.rows_repeated,
                "dropped": dict(self.dropped), "token_lengths": self.token_lengths, "checks": self.checks,
                "formats": self.formats, "encodings": self.encodings}

    def drops(self) -> str:
        """The rows dropped, by reason: 'duplicate: 2, price: expected a number: 1' ('' for none)."""
        return ", ".join(f"{k}: {v}" for k, v in self.dropped.items())

    def summary(self) -> str:
        drops = self.drops() or "none"
        lengths = " ".join(f"{k}={v}" for k, v in self.token_lengths.items())
        held = f", held out for validation {self.rows_held_out}" if self.rows_held_out else ""
        repeated = f", repeated by data.weights {self.rows_repeated}" if self.rows_repeated else ""
        return (f"rows read {self.rows_read}{repeated}, used {self.rows_used}{held}, dropped ({drops}); "
                f"tokens {lengths}")


def percentiles(values: list[int]) -> dict:
    if not values:
        return {}
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]  # noqa: E731  nearest-rank percentile
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1], "mean": round(sum(s) / len(s), 1)}


# ---------------------------------------------------------------- bytes -> text

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))  # UTF-32 first: its LE mark starts like UTF-16's
_BYTE_BREAK = re.compile(rb"\r\n|\r|\n")
_BREAK = re.compile(r"\r\n|\r")  # normalized to \n (CR-only files come from old Mac Excel)
HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")  # syllables and jamo


def _locate(raw: bytes, offset: int) -> tuple[int, int, bytes]:
    """(line number, column, that line's bytes) of a byte offset; CRLF, CR and LF each end a line."""
    breaks = list(_BYTE_BREAK.finditer(raw, 0, offset))
    start = breaks[-1].end() if breaks else 0
    nxt = _BYTE_BREAK.search(raw, offset)
    return len(breaks) + 1, offset - start + 1, raw[start:nxt.start() if nxt else len(raw)]


def _field_at(path: Path, raw: bytes, line: bytes, start: int) -> str:
    """Best effort: the name of the field that holds the bad byte at `start` of `line` ('' if unknown)."""
    header = _BYTE_BREAK.split(raw, 1)[0]
    bad = line[:start].decode("utf-8", "replace") + "\udcff"  # a marker where the bad byte is
    text = bad + line[start + 1:].decode("utf-8", "replace")
    try:
        if path.suffix.lower() in (".csv", ".tsv", ".tab", ".txt"):
            delimiter = _delimiter(path, header.decode("utf-8", "replace"))
            names = next(csv.reader([header.decode("utf-8", "replace").lstrip("\ufeff")], delimiter=delimiter))
            cells = next(csv.reader([text], delimiter=delimiter))
            return next((n for n, c in zip(names, cells) if "\udcff" in c), "")
        obj = json.loads(text)
        return next((str(k) for k, v in obj.items() if isinstance(v, str) and "\udcff" in v), "")
    except (ValueError, StopIteration, AttributeError, RecursionError, csv.Error):
        return ""


def _as_korean(raw: bytes) -> str | None:
    """The text if the bytes are Korean CP949 (a superset of EUC-KR, what Korean Windows and Excel write):
    they must decode strictly and at least half of the non-ASCII characters must be Hangul, so that a damaged
    UTF-8 file is not misread as Korean."""
    try:
        text = raw.decode("cp949")
    except UnicodeDecodeError:
        return None
    wide = [c for c in text if ord(c) > 127]
    return text if wide and sum(bool(HANGUL.match(c)) for c in wide) * 2 >= len(wide) else None


def _decode_with(path: Path, raw: bytes, encoding: str, skip: int = 0) -> str:
    try:
        return raw[skip:].decode(encoding)
    except UnicodeDecodeError as e:
        offset = skip + e.start
        line = raw[skip:offset].decode(encoding, "replace").count("\n") + 1
        raise DataError(path, line, "", f"not valid {encoding.upper()} (byte offset {offset}); the file is damaged "
                                        "or not in the encoding its byte-order mark says; re-save it as UTF-8") from None


def _nul_encoding(raw: bytes) -> str | None:
    """UTF-16 without a byte-order mark: ASCII text then has a zero byte in every other position."""
    half = max(1, len(raw) // 2)
    if raw[1::2].count(0) > half * 0.3:
        return "utf-16-le"
    if raw[0::2].count(0) > half * 0.3:
        return "utf-16-be"
    return None


def decode_file(path: Path) -> tuple[str, str]:
    """(text with \\n line endings, encoding used). Refuses, naming the line, byte and field, what is neither
    UTF-8 (BOM or not), UTF-16/32 with a BOM, nor Korean CP949/EUC-KR."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, "", "", f"cannot read the file ({e.strerror})") from None
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _BREAK.sub("\n", _decode_with(path, raw, encoding, len(bom))), encoding
    if b"\x00" in raw:
        encoding = _nul_encoding(raw)
        if encoding is None:
            line, column, _ = _locate(raw, raw.index(b"\x00"))
            raise DataError(path, line, "", f"contains a zero byte (column {column}): not a text file")
        return _BREAK.sub("\n", _decode_with(path, raw, encoding)), encoding
    try:
        return _BREAK.sub("\n", raw.decode("utf-8")), "utf-8"
    except UnicodeDecodeError as e:
        error = e
    korean = _as_korean(raw)
    if korean is not None:
        log(f"{path}: not UTF-8; read as Korean CP949/EUC-KR (re-save it as UTF-8 to be sure)")
        return _BREAK.sub("\n", korean), "cp949"
    line, column, text = _locate(raw, error.start)
    raise DataError(path, line, _field_at(path, raw, text, column - 1),
                    f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column}, byte offset {error.start}) "
                    "and not Korean CP949/EUC-KR either; re-save the file as UTF-8")


# ---------------------------------------------------------------- text -> raw rows

_DECODER = json.JSONDecoder()


def _json_value(path: Path, text: str, start: int, first_line: int, line: int):
    """(value, end) of the JSON value at text[start:], or a DataError naming the line. first_line: the file's
    line number of text's first line; line: the line the value starts on."""
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as e:
        raise DataError(path, first_line + e.lineno - 1, "", f"not valid JSON ({e.msg} at column {e.colno})") \
            from None
    except RecursionError:
        raise DataError(path, line, "", "not readable JSON: nested too deeply (over ~1,000 levels of [ or {)") \
            from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise DataError(path, line, "", f"not readable JSON ({str(e).split(';')[0][:160]})") from None


def _object(path: Path, line: int, obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise DataError(path, line, "", f"expected a JSON object ({{\"key\": value, ...}}), got {type(obj).__name__}")
    return obj


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        obj, end = _json_value(path, line, len(line) - len(line.lstrip()), line_no, line_no)
        rest = line[end:]
        if rest.strip():
            hint = "; a .json file holds one JSON array or one object per line" if path.suffix.lower() == ".json" \
                else ""
            column = end + len(rest) - len(rest.lstrip()) + 1
            raise DataError(path, line_no, "", f"not valid JSON (extra data at column {column}){hint}")
        rows.append((line_no, _object(path, line_no, obj)))
    return rows


def _read_json_array(path: Path, text: str) -> list[tuple[int, dict]]:
    """A JSON array of objects, each reported with the line it starts on."""
    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def skip(i: int) -> int:  # to the next character that is not white space
        return len(text) - len(text[i:].lstrip()) if i < len(text) else i

    i, rows = skip(text.index("[") + 1), []
    while i < len(text) and text[i] != "]":
        obj, end = _json_value(path, text, i, 1, line_at(i))
        rows.append((line_at(i), _object(path, line_at(i), obj)))
        i = skip(end)
        if i < len(text) and text[i] == ",":
            i = skip(i + 1)
        elif i < len(text) and text[i] != "]":
            raise DataError(path, line_at(i), "", "not valid JSON (expected ',' or ']' in the array)")
    if i >= len(text):
        raise DataError(path, line_at(len(text.rstrip())), "", "not valid JSON (the array is not closed with ']')")
    if text[i + 1:].strip():
        raise DataError(path, line_at(skip(i + 1)), "", "not valid JSON (text after the closing ']' of the array)")
    return rows


def _read_json(path: Path, text: str) -> list[tuple[int, dict]]:
    return _read_json_array(path, text) if text.lstrip().startswith("[") else _read_jsonl(path, text)


_SEP_LINE = re.compile(r"sep=(.)")  # Excel's optional first line naming the delimiter


def _delimiter(path: Path, header: str) -> str:
    """Tab for .tsv/.tab/.txt; for .csv the one a `sep=;` first line names, else a comma, or, when the header
    has no comma, a tab or a semicolon if it has those (a tab-separated file saved as .csv; Excel in locales
    with a decimal comma)."""
    if path.suffix.lower() != ".csv":
        return "\t"
    if m := _SEP_LINE.fullmatch(header.strip()):
        return m.group(1)
    if "," in header:
        return ","
    return "\t" if "\t" in header else ";" if ";" in header else ","


def _check_header(path: Path, line: int, header: list[str]) -> list[str]:
    seen = {}
    for name in header:
        if name and name.lower() in seen:
            raise DataError(path, line, "", f"the header names the column '{name}' twice (also as "
                                            f"'{seen[name.lower()]}'); rename or remove one")
        seen[name.lower()] = name
    return header


def _read_delimited(path: Path, text: str) -> list[tuple[int, dict]]:
    # No cell can be longer than the file, so this limit never cuts a real cell (the default is 128 KiB).
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    # strict: a quote that is never closed is an error, not a cell that swallows the rest of the file
    first = text.split("\n", 1)[0]
    delimiter = _delimiter(path, first)
    quoting = _tab_quoting(text, first) if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True, quoting=quoting)
    sep_line = path.suffix.lower() == ".csv" and _SEP_LINE.fullmatch(first.strip())
    rows, header, end = [], None, 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num  # a quoted cell may run over several lines: report the first
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                if start == 1 and sep_line:
                    continue  # Excel's "sep=," line: the delimiter is already chosen from it
                header = _check_header(path, start, [c.strip() for c in cells])
                continue
            rows.append((start, _cells_to_row(path, header, cells, start)))
    except csv.Error as e:
        hint = ": a quoted cell that starts on this line is never closed (a missing \")" \
            if "end of data" in str(e) else ""
        kind = "tab-separated text" if delimiter == "\t" else "CSV"
        raise DataError(path, end + 1, "", f"not valid {kind} ({e}){hint}") from None
    return rows


def _tab_quoting(text: str, first: str) -> int:
    """How a tab-separated file quotes: plain TSV has no quoting at all, so a cell such as `"Stop," he said.`
    or `"안녕하세요."` is text, quotes included; a file written by a CSV writer with a tab delimiter (pandas
    `to_csv(sep="\t")`, Excel) quotes a cell that holds a quote (doubled inside), a tab or a line break, or
    every cell; Excel quotes one that holds a comma. CSV quoting is read only where the file shows it: a quoted
    header, a doubled quote, a quoted cell that holds a tab, a line break or a comma."""
    if '"' not in text:
        return csv.QUOTE_MINIMAL  # nothing to decide
    if first.lstrip().startswith('"') or '""' in text:
        return csv.QUOTE_MINIMAL
    try:
        quoted = [len(cells) for cells in csv.reader(io.StringIO(text), delimiter="\t", strict=True)]
    except csv.Error:
        return csv.QUOTE_NONE  # a quote inside a cell, as plain text has them
    plain = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if quoted != [len(cells) for cells in plain]:
        return csv.QUOTE_MINIMAL
    # Excel's tab-delimited export quotes a cell that holds a comma: "Yes, please"
    excel = any(len(c) > 1 and c[0] == c[-1] == '"' and "," in c for cells in plain for c in cells)
    return csv.QUOTE_MINIMAL if excel else csv.QUOTE_NONE


def _cells_to_row(path: Path, header: list[str], cells: list[str], start: int) -> dict:
    if len(cells) > len(header):
        raise DataError(path, start, "", f"{len(cells) - len(header)} more cell(s) than the header has columns")
    return {name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header)}


def _read_hub(dataset_id: str) -> list[tuple[int, dict]]:
    name, _, split_name = dataset_id.partition(":")
    try:
        import datasets
        ds = datasets.load_dataset(name, split=split_name or "train")
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; the user needs the message
        raise DataError(dataset_id, "", "", f"not a local file, and loading it as a Hugging Face dataset failed: "
                                            f"{e.__class__.__name__}: {str(e).splitlines()[0][:200]}") from None
    return [(i + 1, dict(r)) for i, r in enumerate(ds)]


JSON_SUFFIXES, TSV_SUFFIXES = (".jsonl", ".json", ".ndjson"), (".tsv", ".tab")


def _read_source(source: str) -> tuple[list[tuple[int, dict]], str]:
    """(line number, raw mapping) for each non-blank row of a file or dataset id, and the text encoding."""
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in (*JSON_SUFFIXES, ".csv", *TSV_SUFFIXES, ".txt"):
            excel = " (save an Excel sheet as \"CSV UTF-8\")" if suffix in (".xlsx", ".xls", ".ods") else ""
            raise DataError(path, "", "", f"unknown file type; use .jsonl, .json, .csv or .tsv{excel}")
        text, encoding = decode_file(path)
        if suffix in JSON_SUFFIXES:
            return _read_json(path, text), encoding
        if suffix == ".txt" and "\t" not in text.split("\n", 1)[0]:
            raise DataError(path, "", "", "unknown file type; use .jsonl, .json, .csv or .tsv (a .txt file is read "
                                          "as tab-separated text, as Excel saves it, when its first line has tabs)")
        return _read_delimited(path, text), encoding
    if path.is_dir():
        raise DataError(path, "", "", "is a folder, expected a .jsonl, .json, .csv or .tsv file")
    if path.exists():
        raise DataError(path, "", "", "is not a regular file (a device or a pipe?); expected a .jsonl, .json, "
                                      ".csv or .tsv file")
    if source.startswith((".", "/", "~")) or path.suffix.lower() in (*JSON_SUFFIXES, ".csv", *TSV_SUFFIXES, ".txt"):
        raise DataError(source, "", "", "file not found")
    return _read_hub(source), "utf-8"


def read_raw(source: str) -> list[tuple[int, dict]]:
    """(line number, raw mapping) for each non-blank row of a file or dataset id."""
    return _read_source(source)[0]


# ---------------------------------------------------------------- chat formats

CHAT_FORMATS = {"openai": "openai messages", "sharegpt": "sharegpt conversations", "alpaca": "alpaca"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
          "gpt": "assistant", "chatgpt": "assistant", "model": "assistant", "bot": "assistant"}


class _BadRow(ValueError):
    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def _get(raw: dict, key: str) -> tuple[bool, Any]:
    for k, v in raw.items():
        if str(k).strip().lower() == key:
            return True, v
    return False, None


def detect_format(raw: dict) -> str:
    """'openai' (a `messages` list), 'sharegpt' (a `conversations` list), 'alpaca' (`instruction` and `output`)
    or 'columns' (one field per column)."""
    keys = {str(k).strip().lower() for k in raw}
    if "messages" in keys:
        return "openai"
    if "conversations" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    return "columns"


def _text(value: Any, field: str, what: str, required: bool = True) -> str | None:
    """A turn's text: a string, or OpenAI's list of content parts ({"type": "text", "text": ...})."""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        if any(p.get("type", "text") != "text" for p in value):
            raise _BadRow(field, f"{what}: has non-text content ({', '.join(str(p.get('type')) for p in value)})")
        value = "".join(str(p.get("text", "")) for p in value)
    if value is None:
        if required:
            raise _BadRow(field, f"{what}: is missing (null)")
        return None
    if not isinstance(value, str):
        raise _BadRow(field, f"{what}: expected text, got {type(value).__name__} {value!r:.40}")
    if not value.strip():
        if not required:
            return None
        raise _BadRow(field, f"{what}: is empty")
    return value.strip()


def _turns(raw: dict, key: str, role_key: str, text_key: str) -> list[tuple[str, str]]:
    """[(role, text)] of a messages/conversations list, roles mapped to system/user/assistant."""
    found, turns = _get(raw, key)
    if not found or turns is None:
        raise _BadRow(key, "is missing")
    if not isinstance(turns, list):
        raise _BadRow(key, f"expected a list of turns, got {type(turns).__name__}")
    out = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise _BadRow(key, f"turn {i}: expected an object with '{role_key}' and '{text_key}', "
                               f"got {type(turn).__name__}")
        keys = (role_key, text_key) if role_key in turn or text_key in turn else ("role", "content")
        role = str(turn.get(keys[0], "")).strip().lower()
        if role not in _ROLES:
            raise _BadRow(key, f"turn {i}: unknown {keys[0]} {turn.get(keys[0])!r} (expected system, user or "
                               "assistant; ShareGPT: system, human or gpt)")
        out.append((_ROLES[role], _text(turn.get(keys[1]), key, f"turn {i} ({role})")))
    return out


def _one_exchange(turns: list[tuple[str, str]], field: str) -> tuple[str | None, str, str]:
    """(system, user, assistant) of [system?, user, assistant]; otherwise say what is wrong."""
    system = turns[0][1] if turns and turns[0][0] == "system" else None
    rest = turns[1:] if system is not None else turns
    roles = [r for r, _ in rest]
    if roles == ["user", "assistant"]:
        return system, rest[0][1], rest[1][1]
    if "system" in roles:
        return _bad_order(field, f"turn {roles.index('system') + 1 + (system is not None)} is a second or late "
                                 "system turn; one system turn may come first")
    users, answers = roles.count("user"), roles.count("assistant")
    if not answers:
        return _bad_order(field, "has no assistant turn (the answer to learn)")
    if not users:
        return _bad_order(field, "has no user turn (the text to translate)")
    if users > 1 or answers > 1:
        return _bad_order(field, f"has {users} user and {answers} assistant turns; a row must be one exchange "
                                 "(optional system, then user, then assistant): split it into one row per exchange")
    return _bad_order(field, f"turns are {', '.join(roles)}; expected user, then assistant")


def _bad_order(field: str, problem: str):
    raise _BadRow(field, problem)


def _alpaca(raw: dict) -> tuple[str | None, str, str]:
    """Alpaca: the user turn is the instruction, then a blank line and the input when there is one (as Alpaca's
    own prompt lays them out), kept whole; the answer is the output; an optional `system` column."""
    found, history = _get(raw, "history")
    if found and history:
        raise _BadRow("history", f"has {len(history) if isinstance(history, list) else 'some'} earlier exchange(s); "
                                 "a row must be one exchange: split it into one row per exchange")
    instruction = _text(_get(raw, "instruction")[1], "instruction", "instruction")
    extra = _text(_get(raw, "input")[1], "input", "input", required=False)
    output = _text(_get(raw, "output")[1], "output", "output")
    system = _text(_get(raw, "system")[1], "system", "system", required=False)
    return system, f"{instruction}\n\n{extra}" if extra else instruction, output


def conversation(raw: dict, fmt: str) -> tuple[str | None, str, str]:
    """(system or None, user, assistant) of a chat-format row; raises _BadRow(field, problem)."""
    if fmt == "alpaca":
        return _alpaca(raw)
    if fmt == "openai":
        return _one_exchange(_turns(raw, "messages", "role", "content"), "messages")
    system, user, assistant = _one_exchange(_turns(raw, "conversations", "from", "value"), "conversations")
    found, beside = _get(raw, "system")  # LLaMA-Factory's ShareGPT rows carry the system prompt beside the turns
    if system is None and found and beside is not None:
        if not isinstance(beside, str) or not beside.strip():
            raise _BadRow("system", f"expected the system prompt as text, got {beside!r:.40}")
        system = beside.strip()
    return system, user, assistant


def _chat_to_columns(raw: dict, fmt: str, roles: dict, file_fmt_line: int) -> dict:
    """The row as {field: text} via roles ({'user': 'en', 'assistant': 'ko', 'system': 'system'})."""
    if detect_format(raw) != fmt:
        needs = {"openai": ["messages"], "sharegpt": ["conversations"], "alpaca": ["instruction", "output"]}[fmt]
        key = next((k for k in needs if not _get(raw, k)[0]), None)
        where = (f"this file is in {CHAT_FORMATS[fmt]} format (detected from line {file_fmt_line}), and all rows of a "
                 "file must be in one format: put the others in a file of their own")
        if key is None:
            raise _BadRow(needs[0], f"this row is in {CHAT_FORMATS[detect_format(raw)]} format; {where}")
        raise _BadRow(key, f"is missing; {where}")
    system, user, assistant = conversation(raw, fmt)
    out = {roles["user"]: user, roles["assistant"]: assistant}
    if system is not None and "system" in roles:
        out[roles["system"]] = system
    return out


# ---------------------------------------------------------------- rows

def _lookup(raw: dict, f: Field) -> tuple[bool, Any]:
    by_lower = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    for key in (f.name, *f.aliases):
        if key.lower() in by_lower:
            return True, by_lower[key.lower()]
    return False, None


def _check(value: Any, f: Field) -> tuple[Any, str | None]:
    """Return (clean value, problem or None); raises Unreadable for a value that must stop the run."""
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
            number = (f.parse or number_from_text)(value) if isinstance(value, str) else float(value)
        except Unreadable:
            raise
        except (TypeError, ValueError, OverflowError):
            return None, f"expected a number, got {value!r:.40}"
        if not math.isfinite(number):
            return None, f"expected a finite number, got {value!r}"
        return number, None
    return value, None


def check_limits(limit: int, last: int) -> None:
    """limit/last count rows from the start/end; a negative one would silently count from the other end."""
    for name, value in (("limit", limit), ("last", last)):
        if value is not None and value < 0:
            raise ConfigError(f"--{name} must be 0 (all rows) or more, got {value}")


def _missing(source: str, line: int, raw: dict, f: Field, names: str, reads_chat: bool = False) -> DataError:
    hint = f" (also accepted: {', '.join(f.aliases)})" if f.aliases else ""
    fmt = detect_format(raw)
    chat = ""
    if fmt != "columns":
        chat = (f" This is a {CHAT_FORMATS[fmt]} row in a file of columns (the first row decides): put chat rows in "
                "a file of their own." if reads_chat else f" This is a {CHAT_FORMATS[fmt]} row, which this product "
                "does not read.")
    return DataError(source, line, f.name, f"is missing{hint}; the row has: "
                                           f"{', '.join(map(str, raw)) or 'nothing'}. Expected: {names}.{chat}")


def _values(source: str, line: int, raw: dict, fields: list[Field], report: DataReport | None,
            reads_chat: bool = False) -> dict | None:
    """The row's clean values, or None when a drop_bad field drops it (counted); DataError for a bad row."""
    names = ", ".join(f.name if f.required else f"{f.name} (optional)" for f in fields)
    values = {}
    for f in fields:
        found, value = _lookup(raw, f)
        if not found:
            if not f.required:
                continue
            if f.drop_bad:
                if report is not None:
                    report.drop(f"{f.name}: is missing")
                return None
            raise _missing(source, line, raw, f, names, reads_chat)
        if not f.required and (value is None or (isinstance(value, str) and not value.strip())):
            values[f.name] = None  # an optional field may be present but empty
            continue
        try:
            clean, problem = _check(value, f)
        except Unreadable as e:
            raise DataError(source, line, f.name, str(e)) from None
        if problem:
            if not f.drop_bad:
                raise DataError(source, line, f.name, problem)
            if report is not None:
                report.drop(f"{f.name}: {problem.split(', got')[0]}")  # e.g. "price: expected a number"
            return None
        values[f.name] = clean
    return values


def read_rows(source: str, fields: list[Field], report: DataReport | None = None,
              limit: int = 0, drop_duplicates: bool = True, last: int = 0,
              chat_roles: dict | None = None) -> list[Row]:
    """Read and validate rows; the first bad row raises DataError (nothing is trained yet, nothing is lost).

    limit: only the first N rows of the file; last: only the last N rows (for held-out tails).
    chat_roles: which field takes which turn of a chat-format row ({'user': 'en', 'assistant': 'ko',
    'system': 'system'}); None reads columns only."""
    check_limits(limit, last)
    raw_rows, encoding = _read_source(source)
    if not raw_rows:
        raise DataError(source, "", "", "contains no rows")
    fmt = detect_format(raw_rows[0][1]) if chat_roles else "columns"
    first_line = raw_rows[0][0]
    if limit:  # the first N rows of the file, duplicates included, so a line range means what it says
        raw_rows = raw_rows[:limit]
    if last:
        raw_rows = raw_rows[-last:]
    rows, seen = [], set()
    for line, raw in raw_rows:
        if report is not None:
            report.rows_read += 1
        if fmt != "columns":
            try:
                raw = _chat_to_columns(raw, fmt, chat_roles, first_line)
            except _BadRow as e:
                raise DataError(source, line, e.field, e.problem) from None
        values = _values(source, line, raw, fields, report, reads_chat=chat_roles is not None)
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
        report.formats[str(source)] = CHAT_FORMATS.get(fmt, fmt)
        if encoding != "utf-8":
            report.encodings[str(source)] = encoding
    return rows


# ---------------------------------------------------------------- several files

def split_sources(spec: str) -> list[str]:
    """'a.jsonl,b.csv' -> ['a.jsonl', 'b.csv']. A file that exists under the whole name (commas and all) is one
    source; empty parts (a trailing comma) are ignored."""
    if not spec:
        return []
    if "," not in spec or Path(spec).expanduser().exists():
        return [spec]
    return [part.strip() for part in spec.split(",") if part.strip()]


def _row_key(row: Row) -> tuple:
    return tuple(sorted(row.values.items(), key=lambda kv: kv[0]))


def without_repeats(rows: list[Row], report: DataReport) -> list[Row]:
    """rows without the repeats of an earlier row (field for field), each counted in report."""
    seen, kept = set(), []
    for row in rows:
        key = _row_key(row)
        if key in seen:
            report.drop("duplicate")
            continue
        seen.add(key)
        kept.append(row)
    return kept


def overlap(rows: list[Row], others: list[Row]) -> int:
    """How many of `rows` (test rows) are also among `others` (training rows), field for field."""
    seen = {_row_key(r) for r in others}
    return sum(_row_key(r) in seen for r in rows)


def drop_duplicates_across(parts: list[list[Row]], report: DataReport) -> list[list[Row]]:
    """A row that repeats one of an earlier file is a duplicate too (each file is already free of its own)."""
    seen, out = set(), []
    for rows in parts:
        keep = [r for r in rows if _row_key(r) not in seen]
        report.drop("duplicate", len(rows) - len(keep))
        seen.update(_row_key(r) for r in keep)
        out.append(keep)
    return out


def mix(parts: list[list[Row]], weights: list[float], seed: int, report: DataReport) -> list[Row]:
    """The rows of several files, each used `weight` times: int(w) copies of every row, plus a sample (seeded,
    without replacement) of round(frac(w) * n) rows for the fraction. 2 = every row twice, 0.5 = half of the
    rows, 1.5 = every row once and half of them again, 0 = none. No weights = every row once."""
    out = []
    for i, (rows, weight) in enumerate(zip(parts, weights or [1.0] * len(parts))):
        whole = int(weight)
        k = round((weight - whole) * len(rows))
        picked = sorted(random.Random(seed * 1_000_003 + i).sample(range(len(rows)), k)) if k else []
        out += rows * whole + [rows[j] for j in picked]
        used = whole * len(rows) + k
        if used >= len(rows):
            report.rows_repeated += used - len(rows)
        else:
            report.drop("left out by data.weights", len(rows) - used)
    return out


def split(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic shuffle-split: (train, held-out). Copies of one row (data.weights above 1) stay on one side,
    so a held-out row is never trained on."""
    if not 0 < fraction < 1 or len(rows) < 2:
        return list(rows), []
    keys = [(r.file, r.line) if isinstance(r, Row) else i for i, r in enumerate(rows)]
    groups = list(dict.fromkeys(keys))
    if len(groups) < 2:
        return list(rows), []
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(groups) * fraction))
    held = {groups[i] for i in order[:n_held]}
    return [r for r, k in zip(rows, keys) if k not in held], [r for r, k in zip(rows, keys) if k in held]


def share(rows: list[Row], key: str, test: Callable[[str], bool]) -> float:
    """Fraction of rows whose field passes a check (for charset/language checks in the data report)."""
    return round(sum(1 for r in rows if test(r[key])) / len(rows), 4) if rows else 0.0
