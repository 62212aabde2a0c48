"""Score base and fine-tuned translations of the same sentences (BLEU ko-mecab, chrF++).

    python -m apps.translator.evaluate --run runs/translator/<run>   [--data FILE] [--limit N]
Writes <run>/eval/metrics.json and <run>/eval/predictions.jsonl.
"""
from __future__ import annotations

from shared import runs
from shared.cli import decoding_overrides, eval_parser, run_cli
from shared.evaluation import predict_both

from .task import TASK, clean_translation, score


def table(metrics: dict) -> str:
    lines = [f"{'model':<12} {'BLEU':>7} {'chrF++':>7} {'n':>5}"]
    for name in ("base", "finetuned"):
        if name in metrics:
            m = metrics[name]
            lines.append(f"{name:<12} {m['bleu']:>7.2f} {m['chrf']:>7.2f} {m['n']:>5}")
    sig = (metrics.get("finetuned") or metrics.get("base"))["signature"]
    lines += [f"BLEU signature: {sig['bleu']}", f"chrF signature: {sig['chrf']}"]
    return "\n".join(lines)


def evaluate(run: str, data: str | None = None, limit: int = 0, with_base: bool = True, last: int = 0,
             **decoding) -> dict:
    p = predict_both(TASK, run, data, limit, last, with_base, **decoding)
    refs = [r["ko"] for r in p.rows]
    tuned = [clean_translation(x) for x in p.finetuned]
    base = [clean_translation(x) for x in p.base] if p.base is not None else [""] * len(refs)
    metrics = {"run": str(p.run_dir), "data": p.source, "decoding": p.decoding, "timings": p.timings,
               "finetuned": score(tuned, refs)}
    if p.base is not None:
        metrics["base"] = score(base, refs)
    predictions = [{"line": r.line, "source": r["en"], "reference": r["ko"], "base": b, "finetuned": t}
                   for r, b, t in zip(p.rows, base, tuned)]
    out = runs.write_eval(p.run_dir, metrics, predictions)
    print(table(metrics))
    print(f"wrote {out}/metrics.json and {out}/predictions.jsonl")
    return metrics


def main(argv=None):
    p = eval_parser(TASK, __doc__)
    p.add_argument("--max-new-tokens", type=int, help="cap on generated tokens per sentence")
    args = p.parse_args(argv)
    run_cli(lambda: evaluate(args.run, args.data, args.limit, not args.no_base, args.last,
                             **decoding_overrides(args)))


if __name__ == "__main__":
    main()
