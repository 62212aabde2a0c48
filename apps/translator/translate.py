"""Translate English to Korean with a trained run, decoded as `evaluate` decodes it (the run's generate.*).

    python -m apps.translator.translate --run runs/translator/<run> "The weather is nice today."
    echo "One sentence per line." | python -m apps.translator.translate
    python -m apps.translator.translate --beams 1 "Streamed as it is generated."   # greedy, streamed

Beam search (the cpu profile's default) gives each line once it is complete; greedy decoding streams it.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
    p.add_argument("--beams", type=int, help="beam search of this width (default: the run's generate.num_beams); "
                                             "1 = greedy, streamed")
    args = p.parse_args(argv)
    if args.beams is not None and args.beams < 1:
        p.error(f"--beams {args.beams}: give 1 (greedy) or more")

    def work():
        lines = [("the text", " ".join(args.text))] if args.text else [
            (f"stdin, line {n}", line) for n, line in enumerate(sys.stdin, 1)]
        # a blank line gives a blank line, so that output line N translates input line N (paste in.txt out.txt)
        checked = [check_text(s, "English text", MAX_CHARS) if s.strip() else None for _, s in lines]
        if not any(c and c.text for c in checked):
            raise ConfigError("no English text given: pass it as an argument or one sentence per line on stdin")
        for (where, _), c in zip(lines, checked):
            if c and c.error:  # checked before the model loads
                raise ConfigError(f"{where}: {c.error}")
        model, tokenizer, fmt, cfg = load_run(find_run(TASK, args))
        gen = cfg.generate if args.beams is None else dataclasses.replace(cfg.generate, num_beams=args.beams)
        for sentence in checked:
            if sentence is None or not sentence.text:
                print(flush=True)
                continue
            for note in sentence.notes:
                log(note)
            sentence = sentence.text
            prompt = TASK.inference_prompt(source_row(sentence), fmt)
            budget = TASK.answer_budget(source_row(sentence), tokenizer)
            with (base_model(model) if args.base else contextlib.nullcontext()):
                # one line per sentence, as evaluation keeps it; the budget bounds the rest
                for piece in first_line(stream(model, tokenizer, fmt, prompt, gen, budget)):
                    print(piece, end="", flush=True)
            print()

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
