"""Score base and fine-tuned price predictions on the same items (MAE, RMSLE, hit rate) with a scatter plot.

    python -m apps.price_predictor.evaluate --run runs/price_predictor/<run>  [--data FILE] [--limit N] [--last N]
    ... --beams 8    also score the fine-tuned model's weighted median over its 8 likeliest answers
Writes <run>/eval/metrics.json, predictions.jsonl and scatter.png (truth vs fine-tuned, coloured by hit).
"""
from __future__ import annotations

from shared import runs
from shared.cli import decoding_overrides, eval_parser, run_cli
from shared.data import DataReport
from shared.evaluation import predict_both
from shared.generate import candidates
from shared.train import read_splits

from .baselines import run_baselines
from .report import scatter, table
from .task import TASK, is_hit, median_price, parse_price, price_metrics

ANSWER_TOKENS = 8  # "999.00" + end-of-turn, as TASK.answer_budget


def evaluate(run: str, data: str | None = None, limit: int = 0, last: int = 0, with_base: bool = True,
             beams: int = 0, **decoding) -> dict:
    def beam_candidates(model, tokenizer, fmt, prompts):
        return candidates(model, tokenizer, fmt, prompts, beams, ANSWER_TOKENS, progress=f"{beams} beams")

    p = predict_both(TASK, run, data, limit, last, with_base, extra=beam_candidates if beams > 1 else None,
                     **decoding)
    truth = [r["price"] for r in p.rows]
    tuned = [parse_price(x) for x in p.finetuned]
    metrics = {"run": str(p.run_dir), "data": p.source, "decoding": p.decoding, "timings": p.timings,
               "finetuned": price_metrics(truth, tuned)}
    medians = [median_price(c) for c in p.extra] if p.extra is not None else None
    if medians is not None:
        metrics["finetuned_median"] = {**price_metrics(truth, medians), "beams": beams}
    base = [None] * len(truth)
    if p.base is not None:
        base = [parse_price(x) for x in p.base]
        metrics["base"] = price_metrics(truth, base)
    # The baselines, fitted on the run's own training rows and scored on the same items, sit next to the LLMs.
    train_rows, _ = read_splits(p.cfg, TASK, DataReport())
    metrics["baselines"] = run_baselines(train_rows, p.rows)
    predictions = [{"line": r.line, "title": r["title"], "category": r.values.get("category") or "",
                    "price": t, "finetuned_answer": ft_raw, "finetuned": ft,
                    "finetuned_hit": ft is not None and is_hit(t, ft),
                    "base_answer": b_raw, "base": b}
                   for r, t, ft_raw, ft, b_raw, b in zip(p.rows, truth, p.finetuned, tuned,
                                                         p.base or [None] * len(truth), base)]
    for row, median in zip(predictions, medians or []):
        row["finetuned_median"] = median
    out = runs.write_eval(p.run_dir, metrics, predictions)
    scatter(truth, tuned, f"fine-tuned: MAE ${metrics['finetuned']['mae']:.0f}, "
                          f"hit {metrics['finetuned']['hit_rate']:.0%}", out / "scatter.png")
    shown = {"base model": metrics["base"]} if "base" in metrics else {}
    shown["fine-tuned"] = metrics["finetuned"]
    if medians is not None:
        shown[f"fine-tuned, {beams}-beam median"] = metrics["finetuned_median"]
    print(table({**metrics["baselines"], **shown}))
    unparsed = [x for x in predictions if x["finetuned"] is None][:5]
    for x in unparsed:
        print(f"unparsed answer (line {x['line']}): {x['finetuned_answer']!r}")
    print(f"wrote {out}/metrics.json, predictions.jsonl and scatter.png")
    return metrics


def main(argv=None):
    parser = eval_parser(TASK, __doc__)
    parser.add_argument("--beams", type=int, default=0,
                        help="also score the weighted median of the fine-tuned model's N likeliest answers (beam "
                             "search); 0 = greedy only")
    args = parser.parse_args(argv)
    run_cli(lambda: evaluate(args.run, args.data, args.limit, args.last, not args.no_base, args.beams,
                             **decoding_overrides(args)))


if __name__ == "__main__":
    main()
