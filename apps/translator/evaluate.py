"""Score base and fine-tuned translations of the same sentences (BLEU ko-mecab, chrF++).

    python -m apps.translator.evaluate --run runs/translator/<run>   [--data FILE] [--limit N | --last N]
    ... --checkpoint 1200    score the run's checkpoints/checkpoint-1200 instead of its final weights
    ... --checkpoint all     each kept checkpoint, then the final weights, with their scores side by side
Writes <run>/eval/<name>/metrics.json and predictions.jsonl, where <name> is "test" for the run's own test
file and the file's name otherwise (with -firstN / -lastN after it for part of the file, and -checkpoint-N for a
checkpoint), so scores on several files, parts and checkpoints sit side by side.
"""
from __future__ import annotations

import argparse

from shared import evaluation
from shared.cli import check_counts, decoding_overrides, eval_parser, run_cli
from shared.config import GenerateSettings

from .task import TASK, clean_translation, score


def table(metrics: dict) -> str:
    lines = [f"{'model':<12} {'BLEU':>7} {'chrF++':>7} {'n':>5}"]
    for name in ("base", "finetuned"):
        if name in metrics:
            m = metrics[name]
            lines.append(f"{name:<12} {m['bleu']:>7.2f} {m['chrf']:>7.2f} {m['n']:>5}")
    sig = (metrics.get("finetuned") or metrics.get("base"))["signature"]
    lines += [f"BLEU signature: {sig['bleu']}", f"chrF signature: {sig['chrf']}"]
    if note := evaluation.base_decoding_note(metrics):
        lines.append(note)
    return "\n".join(lines)


def evaluate(run: str, data: str | None = None, *, limit: int = 0, last: int = 0, with_base: bool = True,
             runs_root: str | None = None, checkpoint: str | None = None, base_beams: int = evaluation.BASE_BEAMS,
             **decoding) -> dict:
    plan = evaluation.plan(TASK, run, data, limit, last, runs_root, checkpoint,
                           {**decoding, "base_beams": base_beams if with_base else None})
    p = evaluation.predict_both(TASK, plan, with_base, base_beams=base_beams, **decoding)
    refs = [r["ko"] for r in p.rows]
    tuned = [clean_translation(x) for x in p.finetuned]
    base = [clean_translation(x) for x in p.base] if p.base is not None else [None] * len(refs)  # not scored
    metrics = {**evaluation.metrics_head(plan, p), "timings": p.timings, "finetuned": score(tuned, refs)}
    if p.base is not None:
        metrics["base"] = score(base, refs)
    predictions = [{"line": r.line, "source": r["en"], "reference": r["ko"], "base": b, "finetuned": t}
                   for r, b, t in zip(p.rows, base, tuned)]
    summary = {k: {"bleu": metrics[k]["bleu"], "chrf": metrics[k]["chrf"]} for k in ("base", "finetuned")
               if k in metrics}
    out = p.run.write_eval(plan.name, p.source, metrics, predictions, summary)
    print(table(metrics))
    print(f"wrote {out}/metrics.json and {out}/predictions.jsonl")
    return metrics


def main(argv=None):
    p = eval_parser(TASK, __doc__)
    p.add_argument("--max-new-tokens", type=int, help="cap on generated tokens per sentence")
    p.add_argument("--beams", dest="num_beams", type=int,
                   help="beam search of this width (default: the run's generate.num_beams; 1 = greedy)")
    p.add_argument("--beam-pick", choices=GenerateSettings.__dataclass_fields__["beam_pick"].metadata["choices"],
                   help="with --beams: keep the most likely answer (score), the most likely per token (length) or "
                        "the one closest to the other beams in chrF++ (consensus) (default: the run's "
                        "generate.beam_pick)")
    p.add_argument("--base-beams", type=int, default=evaluation.BASE_BEAMS,
                   help="beam search of this width for the base model (default %(default)s: greedy; it mostly "
                        "repeats the system prompt, and beams over its whole vocabulary take 3x the time for the "
                        "same score); the fine-tuned model's --beams to decode both alike")
    p.add_argument("--first-line", action=argparse.BooleanOptionalAction,
                   help="end each translation at its first line break, the part that is scored (default: the "
                        "run's generate.first_line; the scores are the same either way, only the time differs)")
    args = p.parse_args(argv)

    for flag, width in (("--beams", args.num_beams), ("--base-beams", args.base_beams)):
        if width is not None and width < 1:
            p.error(f"{flag} {width}: give 1 (greedy) or more")

    def work():
        check_counts(args)

        def score(run, checkpoint, with_base):
            return evaluate(run, args.data, limit=args.limit, last=args.last, with_base=with_base,
                            full_vocab=args.full_vocab, runs_root=args.runs_root, checkpoint=checkpoint,
                            base_beams=args.base_beams, **decoding_overrides(args))

        evaluation.score_each(TASK, args.run, args.runs_root, args.checkpoint, not args.no_base, score)

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
