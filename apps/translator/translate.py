"""Translate English to Korean with a trained run, streaming the answer.

    python -m apps.translator.translate --run runs/translator/<run> "The weather is nice today."
    echo "One sentence per line." | python -m apps.translator.translate
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from shared import runs
from shared.cli import run_cli
from shared.generate import base_model, first_line, load_run, stream

from .task import TASK, source_row


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m apps.translator.translate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="*", help="English text (default: one sentence per line on stdin)")
    p.add_argument("--run", default="latest", help="run folder (default: the latest translator run)")
    p.add_argument("--base", action="store_true", help="use the base model (adapter disabled)")
    args = p.parse_args(argv)

    def work():
        run_dir = runs.find_run(args.run, "runs", TASK.name)
        model, tokenizer, fmt, cfg = load_run(run_dir)
        sentences = [" ".join(args.text)] if args.text else [line for line in sys.stdin if line.strip()]
        for sentence in sentences:
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
