"""Score base and fine-tuned price predictions on the same items (MAE, RMSLE, hit rate) with a scatter plot.

    python -m apps.price_predictor.evaluate --run runs/price_predictor/<run>  [--data FILE] [--limit N] [--last N]
    ... --beams 8    also score the fine-tuned model's weighted median over its 8 likeliest answers
Writes <run>/eval/<name>/metrics.json, predictions.jsonl and scatter.png (truth vs fine-tuned, coloured by hit),
where <name> is "test" for the run's own test file and the file's name otherwise.
"""
from __future__ import annotations

from shared import evaluation
from shared.cli import check_counts, decoding_overrides, eval_parser, run_cli
from shared.data import DataReport
from shared.generate import candidates
from shared.train import read_splits

from .baselines import run_baselines
from .report import scatter, table
from .task import TASK, is_hit, median_price, parse_price, price_metrics


def evaluate(run: str, data: str | None = None, *, limit: int = 0, last: int = 0, with_base: bool = True,
             beams: int = 0, runs_root: str | None = None, **decoding) -> dict:
    plan = evaluation.plan(TASK, run, data, limit, last, runs_root)
    # The baselines are fitted on the run's own training rows: read them now, before minutes of generation.
    train_rows, _ = read_splits(plan.cfg, TASK, DataReport())

    def beam_candidates(model, tokenizer, fmt, prompts):
        return candidates(model, tokenizer, fmt, prompts, beams, TASK.answer_budget(None, tokenizer),
                          progress=f"{beams} beams")

    p = evaluation.predict_both(TASK, plan, with_base, extra=beam_candidates if beams > 1 else None, **decoding)
    truth = [r["price"] for r in p.rows]
    tuned = [parse_price(x) for x in p.finetuned]
    metrics = {"run": str(p.run.path), "data": p.source, "decoding": p.decoding, "timings": p.timings,
               "finetuned": price_metrics(truth, tuned)}
    medians = [median_price(c) for c in p.extra] if p.extra is not None else None
    if medians is not None:
        metrics["finetuned_median"] = {**price_metrics(truth, medians), "beams": beams}
    base = [None] * len(truth)
    if p.base is not None:
        base = [parse_price(x) for x in p.base]
        metrics["base"] = price_metrics(truth, base)
    metrics["baselines"] = run_baselines(train_rows, p.rows)
    predictions = [{"line": r.line, "title": r["title"], "category": r.values.get("category") or "",
                    "price": t, "finetuned_answer": ft_raw, "finetuned": ft,
                    "finetuned_hit": ft is not None and is_hit(t, ft),
                    "base_answer": b_raw, "base": b}
                   for r, t, ft_raw, ft, b_raw, b in zip(p.rows, truth, p.finetuned, tuned,
                                                         p.base or [None] * len(truth), base)]
    for row, median in zip(predictions, medians or []):
        row["finetuned_median"] = median
    summary = {k: {"mae": metrics[k]["mae"], "hit_rate": metrics[k]["hit_rate"]}
               for k in ("base", "finetuned", "finetuned_median") if k in metrics}
    out = p.run.write_eval(plan.name, p.source, metrics, predictions, summary)
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

    def work():
        check_counts(args)
        evaluate(args.run, args.data, limit=args.limit, last=args.last, with_base=not args.no_base,
                 beams=args.beams, runs_root=args.runs_root, **decoding_overrides(args))

    run_cli(work)


if __name__ == "__main__":
    main()
