"""Translate English to Korean with a trained run, streaming the answer.

    python -m apps.translator.translate --run runs/translator/<run> "The weather is nice today."
    echo "One sentence per line." | python -m apps.translator.translate
"""
from __future__ import annotations

import contextlib
import sys

from shared.cli import find_run, run_cli, run_parser
from shared.config import ConfigError
from shared.demo import check_text
from shared.generate import base_model, first_line, load_run, stream
from shared.log import log

from .task import MAX_CHARS, TASK, source_row


def main(argv=None):
    p = run_parser(TASK, TASK.command("translate"), __doc__)
    p.add_argument("text", nargs="*", help="English text (default: one sentence per line on stdin)")
    p.add_argument("--base", action="store_true", help="use the base model (adapter disabled)")
    args = p.parse_args(argv)

    def work():
        sentences = [" ".join(args.text)] if args.text else [line for line in sys.stdin if line.strip()]
        checked = [check_text(s, "English text", MAX_CHARS) for s in sentences]
        if not checked or any(c.error for c in checked):
            raise ConfigError("no English text given: pass it as an argument or one sentence per line on stdin")
        model, tokenizer, fmt, cfg = load_run(find_run(TASK, args))
        for sentence in checked:
            for note in sentence.notes:
                log(note)
            sentence = sentence.text
            prompt = TASK.inference_prompt(source_row(sentence), fmt)
            budget = TASK.answer_budget(source_row(sentence), tokenizer)
            with (base_model(model) if args.base else contextlib.nullcontext()):
                # one line per sentence, as evaluation keeps it; the budget bounds the rest
                for piece in first_line(stream(model, tokenizer, fmt, prompt, cfg.generate, budget)):
                    print(piece, end="", flush=True)
            print()

    run_cli(work)


if __name__ == "__main__":
    main()
