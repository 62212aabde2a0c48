"""Predict one product's price with a trained run.

    python -m apps.price_predictor.predict --run runs/price_predictor/<run> --title "..." --description "..."
"""
from __future__ import annotations

from shared.cli import find_run, run_cli, run_parser
from shared.config import ConfigError
from shared.demo import check_text
from shared.generate import base_model, generate, load_run
from shared.log import log

from . import readout
from .task import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, TASK, item_row, parse_price


def main(argv=None):
    p = run_parser(TASK, TASK.command("predict"), __doc__)
    p.add_argument("--title", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--base", action="store_true", help="also show the base model's answer")
    args = p.parse_args(argv)

    def work():
        title = check_text(args.title, "title", MAX_TITLE_CHARS)
        description = check_text(args.description, "description", MAX_DESCRIPTION_CHARS, required=False)
        if not title.text:
            raise ConfigError("--title is empty: give the product's title")
        for flag, checked in (("--title", title), ("--description", description)):
            if checked.error:
                raise ConfigError(f"{flag}: {checked.error}")
        for note in title.notes + description.notes:
            log(note)
        run = find_run(TASK, args)
        model, tokenizer, fmt, cfg = load_run(run)
        row = item_row(title.text, description.text)
        prompt = [TASK.inference_prompt(row, fmt)]
        budget = [TASK.answer_budget(row, tokenizer)]
        answer = generate(model, tokenizer, fmt, prompt, cfg.generate, budget)[0]
        price = parse_price(answer)
        print(f"${price:,.2f}" if price is not None else f"could not read a price from the answer {answer!r}")
        read = readout.estimate(run, model, tokenizer, fmt, [row])
        if read is not None:
            print(f"read off the hidden state: ${read[0]:,.2f}")
        if args.base:
            with base_model(model):
                base = generate(model, tokenizer, fmt, prompt, cfg.generate, budget)[0]
            print(f"base model: {base!r}")

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
