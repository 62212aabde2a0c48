"""A task's output vocabulary: the tokens its answers can be written with, and an output layer limited to them.

Why: Gemma 3's output layer has 262,144 rows (168M parameters, more than the 100M of the rest of the model).
Training runs it on every answer token and generation on every new token, yet a translator into Korean never
writes Cyrillic or Devanagari and a price never holds a letter. With train.output_vocab = "answers" the loss's
softmax and generation both run over the tokens below only; the run keeps the list in output_vocab.json.

Which tokens: every token in the training or validation answers, plus every token whose text is made only of
 - non-letters seen in those answers (letters go by script only: names in Korean answers end up using every
   Latin letter, and admitting every token spelled with them kept 65% of the vocabulary on the dev data),
 - letters of a script that makes up a fifth or more of the answers' letters (the first word of the letter's
   Unicode name: HANGUL, LATIN, CJK, ...), or, in pieces of one or two characters, of any script seen there,
 - ASCII digits, punctuation and blank space,
plus byte-fallback tokens (a character with no token of its own is spelled in bytes) and the stop tokens.
For the shipped translator data that is 15,403 tokens (6% of Gemma's vocabulary); for the dev prices 4,649 (runs of
ASCII punctuation and blanks are most of them).

Each answer's last token and every 8th token keep the full softmax (shared/loss.py:FULL_EVERY), so the
tokens outside are still pushed down. The adapter stays a standard PEFT adapter: outside this project (a plain
PEFT load, a merged or GGUF export) the model decodes over the full vocabulary. On the default translator run
that changed 14 of 240 test answers and scored chrF++ 19.03 against 18.90 (docs/results.md, "decoding options");
without the full-softmax tokens it was 16.90, most answers ending in a stray token.
"""
from __future__ import annotations

import contextlib
import unicodedata
from pathlib import Path
from typing import Iterable

import torch

from .embeddings import compute_dtype

FILE = "output_vocab.json"
# A script is an answer's own when it holds this share of the answers' letters (Hangul in Korean translations);
# one that only appears in names and acronyms (Latin there) keeps its seen tokens and its SHORT pieces, enough
# to spell any new name, without the ~150k Latin-script tokens of Gemma's vocabulary.
MAIN_SCRIPT = 0.2
SHORT = 2
REPLACEMENT = "\ufffd"  # what a byte-fallback token decodes to on its own


def _script(char: str) -> str:
    return unicodedata.name(char, "?").split(" ")[0]


def answer_vocabulary(tokenizer, answers: Iterable[Iterable[int]], always: Iterable[int] = ()) -> list[int]:
    """Sorted token ids an answer can be written with (see the module's docstring)."""
    seen: set[int] = set()
    letters: dict[str, int] = {}
    chars: set[str] = set()
    for ids in answers:
        ids = [int(i) for i in ids]
        seen.update(ids)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        chars.update(text)
        for c in text:
            if c.isalpha():
                letters[_script(c)] = letters.get(_script(c), 0) + 1
    total = sum(letters.values()) or 1
    main = {script for script, n in letters.items() if n >= MAIN_SCRIPT * total}
    verdict: dict[tuple[str, bool], bool] = {}

    def allowed(c: str, short: bool) -> bool:
        key = (c, short)
        if key not in verdict:
            if c.isalpha():  # letters go by script: seeing every Latin letter in names must not admit Latin words
                verdict[key] = _script(c) in (letters if short else main)
            else:
                verdict[key] = c in chars or c.isspace() or c.isascii()
        return verdict[key]

    keep = seen | set(always)
    single = [[i] for i in range(len(tokenizer))]
    # The Rust tokenizer decodes the 262k pieces in 0.2 s against 1.1 s through transformers (the same strings
    # for Gemma 3; transformers' space clean-up, where a tokenizer asks for it, changes nothing checked here)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pieces = (backend.decode_batch(single, skip_special_tokens=True) if backend is not None
              else tokenizer.batch_decode(single, skip_special_tokens=True))
    for i, piece in enumerate(pieces):
        short = len(piece.strip()) <= SHORT
        if piece and (piece == REPLACEMENT or all(allowed(c, short) for c in piece)):
            keep.add(i)
    return sorted(keep)


def save(run_dir: Path, ids: list[int], vocab_size: int) -> None:
    from .runs import write_json
    write_json(run_dir / FILE, {"vocab_size": vocab_size, "tokens": len(ids), "ids": ids})


def load(run_dir: Path) -> list[int] | None:
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    from .config import ConfigError
    from .runs import read_json
    ids = read_json(path).get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ConfigError(f"{path}: field 'ids' must be a non-empty list of token ids; delete the file to decode "
                          "over the full vocabulary")
    return ids


class OutputVocab:
    """The ids (sorted) and, for each token of the full vocabulary, its row in the limited output layer (-1
    outside it)."""

    def __init__(self, ids: list[int], vocab_size: int, device=None):
        self.ids = torch.tensor(ids, dtype=torch.long, device=device)
        self.row = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
        self.row[self.ids] = torch.arange(len(ids), device=device)

    _weight_rows = None  # (source weight's storage and version, its rows for ids): the layer is frozen

    def rows_of(self, weight: torch.Tensor) -> torch.Tensor:
        """weight[ids], sliced once per weight instead of once per training step (a trainable weight is sliced
        every time, so its gradient flows)."""
        if weight.requires_grad:
            return weight[self.ids]
        key = (weight.data_ptr(), weight.dtype, weight._version)
        if self._weight_rows is None or self._weight_rows[0] != key:
            self._weight_rows = (key, weight[self.ids].to(compute_dtype(weight)))
        return self._weight_rows[1]

    def to(self, device) -> "OutputVocab":
        if self.ids.device != torch.device(device):
            self.ids, self.row = self.ids.to(device), self.row.to(device)
        return self


class LimitedOutputLayer(torch.nn.Module):
    """Drop-in for a bias-free output layer: logits computed for the vocabulary's rows only, every other token
    set far below (-1e4; a soft-capped model maps it to -cap). Token ids stay those of the full vocabulary, so
    generate(), beam search and the tokenizer work unchanged. `enabled = False` gives the full layer back (the
    base-model comparison decodes as the base model would). `weight` is the original (tied) parameter."""

    FLOOR = -1e4

    def __init__(self, head: torch.nn.Module, ids: list[int]):
        super().__init__()
        self.head, self.enabled = head, True
        self.weight = head.weight
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=head.weight.device),
                             persistent=False)
        self._rows = None  # the weight's rows for ids, sliced once (the output layer is frozen)
        self.compact = False  # see compact_logits

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.contiguous()  # see models._contiguous_output_layer
        if not self.enabled:
            return self.head(hidden)
        if self._rows is None or self._rows.dtype != compute_dtype(self.weight):
            self._rows = self.weight.detach()[self.ids].to(compute_dtype(self.weight)).contiguous()
        limited = hidden @ self._rows.to(hidden.dtype).t()
        if self.compact:
            return limited
        out = torch.full((*hidden.shape[:-1], self.weight.shape[0]), self.FLOOR, dtype=limited.dtype,
                         device=hidden.device)
        out[..., self.ids] = limited
        return out


def unwrapped(model):
    """The model under its PEFT wrapper, if any: the one whose output layer is swapped."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def limit_output_layer(model, ids: list[int]) -> LimitedOutputLayer:
    """Put a LimitedOutputLayer in the model (under its PEFT wrapper, if any) for inference."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError("the output vocabulary needs a bias-free output layer")
    limited = LimitedOutputLayer(head, ids)
    inner.set_output_embeddings(limited)
    return limited


@contextlib.contextmanager
def limited_vocabulary(model, ids: list[int] | None):
    """Inside the block the model decodes over `ids` only, as `evaluate` will decode the finished run (the
    training model keeps its full output layer for the loss); no-op when ids is None."""
    if ids is None:
        yield model
        return
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    limit_output_layer(model, ids)
    try:
        yield model
    finally:
        inner.set_output_embeddings(head)


@contextlib.contextmanager
def full_vocabulary(model):
    """Inside the block the model decodes over its whole vocabulary again (no-op without a limited layer)."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    if not isinstance(head, LimitedOutputLayer) or not head.enabled:
        yield model
        return
    head.enabled = False
    try:
        yield model
    finally:
        head.enabled = True


@contextlib.contextmanager
def compact_logits(model):
    """Inside the block a limited output layer returns the logits of its own tokens only (column j is token
    ids[j]) instead of a full-vocabulary row that is -1e4 almost everywhere. Yields the layer (its `ids` map a
    column back to a token id) or None where the model decodes over its whole vocabulary. The decoding loops
    use it: on the translator's 15k of 262k tokens, building, normalising and searching the full rows took a
    quarter of beam search's time (cProfile of `evaluate --limit 64`, AMD EPYC avx512_bf16)."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    if not isinstance(head, LimitedOutputLayer) or not head.enabled:
        yield None
        return
    if head.compact:  # an enclosing block already holds it
        yield head
        return
    head.compact = True
    try:
        yield head
    finally:
        head.compact = False


def describe(ids: list[int], vocab_size: int) -> str:
    return f"{len(ids):,} of {vocab_size:,} tokens ({100 * len(ids) / vocab_size:.0f}%)"
