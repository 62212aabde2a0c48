"""What is specific to EN->KO translation: the chat messages, output clean-up, and the metrics."""
from __future__ import annotations

import re
from pathlib import Path

from shared.data import DataError, DataReport, Field, Row, share
from shared.generate import first_line
from shared.log import log
from shared.task import Task

# Short on purpose: it is repeated in every training example, and prompt tokens cost compute.
SYSTEM_PROMPT = "You are an expert English-to-Korean translator. Translate into natural, polite Korean."

HANGUL = re.compile(r"[\uac00-\ud7a3]")
HANGUL_LETTER = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")  # syllables and jamo
# Rows whose English is mostly Hangul are dropped and counted; above this share of a file's rows the columns
# are probably swapped, and the run stops at the first such row instead.
MAX_KOREAN_SOURCES = 0.1


# Longest input the demo and translate accept: one or two sentences (the model was trained on single sentences
# of up to ~160 tokens); longer text is cut on a word boundary, with a note.
MAX_CHARS = 600

class TranslatorTask(Task):
    name = "translator"
    package = __package__  # "apps.translator"
    fields = [Field("en", aliases=("english", "source", "src", "input")),
              Field("ko", aliases=("korean", "target", "tgt", "output")),
              Field("system", required=False)]  # a row's own system prompt (chat-format data)
    chat_roles = {"user": "en", "assistant": "ko", "system": "system"}
    configs_dir = Path(__file__).parent / "configs"

    metric_name = "chrf"  # chrF++: character n-grams suit Korean, whose word forms vary with particles

    def metric(self, rows: list[Row], answers: list[str]) -> float:
        return score([clean_translation(a) for a in answers], [r["ko"] for r in rows])["chrf"]

    def messages(self, row: Row) -> list[dict]:
        return [{"role": "system", "content": row.values.get("system") or SYSTEM_PROMPT},
                {"role": "user", "content": row.values["en"]},
                {"role": "assistant", "content": row.values.get("ko", "")}]

    def read_one(self, source: str, report: DataReport, limit: int = 0, last: int = 0,
                 drop_duplicates: bool = True) -> list[Row]:
        rows = super().read_one(source, report, limit=limit, last=last, drop_duplicates=drop_duplicates)
        return drop_korean_sources(rows, report)

    def answer_budget(self, row: Row, tokenizer) -> int:
        """Korean takes 1.33x the English tokens at the median and 2.1x at the 99th percentile (Gemma tokenizer,
        shipped data); the cap stops a model that never emits end-of-turn from running on to max_new_tokens."""
        return int(2.2 * len(tokenizer(row.values["en"], add_special_tokens=False)["input_ids"])) + 10

    def data_checks(self, rows: list[Row]) -> dict:
        has_hangul = lambda s: bool(HANGUL.search(s))  # noqa: E731
        return {"ko_with_hangul": share(rows, "ko", has_hangul),
                "en_with_hangul": share(rows, "en", has_hangul)}


TASK = TranslatorTask()


def mostly_hangul(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and 2 * sum(bool(HANGUL_LETTER.match(c)) for c in letters) > len(letters)


def drop_korean_sources(rows: list[Row], report: DataReport) -> list[Row]:
    """Rows whose English field is mostly Hangul are dropped and counted (a few in a crawled corpus are noise);
    when they are more than MAX_KOREAN_SOURCES of the file, stop at the first one (columns swapped?)."""
    bad = [r for r in rows if mostly_hangul(r["en"])]
    if not bad:
        return rows
    first = bad[0]
    if len(bad) > MAX_KOREAN_SOURCES * len(rows):
        raise DataError(first.file, first.line, "en", f"is mostly Hangul, and so are {len(bad)} of the file's "
                                                      f"{len(rows)} rows: are the English and Korean columns swapped?")
    report.drop("en: mostly Hangul (Korean in the English column)", len(bad))
    log(f"{first.file}: {len(bad)} row(s) dropped because the English is mostly Hangul (first: line {first.line})")
    return [r for r in rows if not mostly_hangul(r["en"])]


def source_row(english: str) -> Row:
    """A row for inference: the answer is unknown."""
    return Row({"en": english.strip(), "ko": ""}, "<input>", 0)


def clean_translation(text: str) -> str:
    """A translation as scored: its first line (shared.generate.first_line, as translate and the demo show it)."""
    return "".join(first_line([text])).strip()


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (sacrebleu, ko-mecab tokenizer) and chrF++ with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU(tokenize="ko-mecab")
    chrf = CHRF(word_order=2)
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "n": len(hypotheses),
            "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}}
