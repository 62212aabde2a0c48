"""Predict one product's price with a trained run.

    python -m apps.price_predictor.predict --run runs/price_predictor/<run> --title "..." --description "..."
"""
from __future__ import annotations

import argparse

from shared import runs
from shared.cli import run_cli
from shared.generate import base_model, generate, load_run

from .task import TASK, item_row, parse_price


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m apps.price_predictor.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="latest", help="run folder (default: the latest price_predictor run)")
    p.add_argument("--title", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--base", action="store_true", help="also show the base model's answer")
    args = p.parse_args(argv)

    def work():
        run_dir = runs.find_run(args.run, "runs", TASK.name)
        model, tokenizer, fmt, cfg = load_run(run_dir)
        row = item_row(args.title, args.description)
        prompt = [TASK.inference_prompt(row, fmt)]
        budget = [TASK.answer_budget(row, tokenizer)]
        answer = generate(model, tokenizer, fmt, prompt, cfg.generate, budget)[0]
        price = parse_price(answer)
        print(f"${price:,.2f}" if price is not None else f"could not read a price from the answer {answer!r}")
        if args.base:
            with base_model(model):
                base = generate(model, tokenizer, fmt, prompt, cfg.generate, budget)[0]
            print(f"base model: {base!r}")

    run_cli(work)


if __name__ == "__main__":
    main()
