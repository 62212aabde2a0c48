"""What is specific to EN->KO translation: the chat messages, output clean-up, and the metrics."""
from __future__ import annotations

import re
from pathlib import Path

from shared.data import Field, Row, share
from shared.task import Task

# Short on purpose: it is repeated in every training example, and prompt tokens cost compute.
SYSTEM_PROMPT = "You are an expert English-to-Korean translator. Translate into natural, polite Korean."

HANGUL = re.compile(r"[\uac00-\ud7a3]")


# Longest input the demo and translate accept: one or two sentences (the model was trained on single sentences
# of up to ~160 tokens); longer text is cut on a word boundary, with a note.
MAX_CHARS = 600

class TranslatorTask(Task):
    name = "translator"
    package = __package__  # "apps.translator"
    fields = [Field("en", aliases=("english", "source", "src", "input")),
              Field("ko", aliases=("korean", "target", "tgt", "output"))]
    configs_dir = Path(__file__).parent / "configs"

    def messages(self, row: Row) -> list[dict]:
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": row.values["en"]},
                {"role": "assistant", "content": row.values.get("ko", "")}]

    def answer_budget(self, row: Row, tokenizer) -> int:
        """Korean takes 1.33x the English tokens at the median and 2.1x at the 99th percentile (Gemma tokenizer,
        shipped data); the cap stops a model that never emits end-of-turn from running on to max_new_tokens."""
        return int(2.2 * len(tokenizer(row.values["en"], add_special_tokens=False)["input_ids"])) + 10

    def data_checks(self, rows: list[Row]) -> dict:
        has_hangul = lambda s: bool(HANGUL.search(s))  # noqa: E731
        return {"ko_with_hangul": share(rows, "ko", has_hangul),
                "en_with_hangul": share(rows, "en", has_hangul)}


TASK = TranslatorTask()


def source_row(english: str) -> Row:
    """A row for inference: the answer is unknown."""
    return Row({"en": english.strip(), "ko": ""}, "<input>", 0)


def clean_translation(text: str) -> str:
    """Keep the first non-empty line: the references are one line, and a small model may ramble after it."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (sacrebleu, ko-mecab tokenizer) and chrF++ with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU(tokenize="ko-mecab")
    chrf = CHRF(word_order=2)
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "n": len(hypotheses),
            "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}}
