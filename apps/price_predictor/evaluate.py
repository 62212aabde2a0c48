"""Score base and fine-tuned price predictions on the same items (MAE, RMSLE, hit rate) with a scatter plot.

    python -m apps.price_predictor.evaluate --run runs/price_predictor/<run>  [--data FILE] [--limit N] [--last N]
    ... --beams 16      the weighted median and mean over the fine-tuned model's 16 likeliest prices (default 8)
    ... --no-readout    skip the hidden-state read-out (readout.py)
    ... --no-ensemble   skip the blend of the estimators
    ... --checkpoint 400  score the run's checkpoints/checkpoint-400 instead of its final weights ('all': each)
Rows: the two baselines, the base model, the fine-tuned model decoded greedily, the fine-tuned model's weighted
median and mean price over its N likeliest (a beam search that reads each prompt once and stops at the price's
'.': about the cost of greedy decoding; --beams 0 skips it), its hidden-state read-out (fitted by `train`, or
here once if the run has none), and the ensemble (e.g. "ensemble: fine-tuned + read-out"): the combination of
those three with the lowest MAE on the run's validation rows (its data.valid file, or the rows training held out;
ensemble.py), scored on the test rows.
Writes <run>/eval/<name>/metrics.json, predictions.jsonl, scatter.png (truth vs fine-tuned, coloured by hit) and
ensemble_validation.jsonl (the members' estimates on the validation rows the ensemble was chosen on),
where <name> is "test" for the run's own test file and the file's name otherwise.
"""
from __future__ import annotations

import dataclasses
import time

from shared import evaluation
from shared.cli import check_counts, decoding_overrides, eval_parser, run_cli
from shared.data import DataReport
from shared.generate import candidates, generate
from shared.log import log
from shared.runs import write_jsonl
from shared.train import read_splits

from . import ensemble as blend
from . import readout as head
from .baselines import fit_text_ridge, run_baselines, text_of
from .report import metric_rows, scatter, table
from .task import TASK, is_hit, mean_price, median_price, parse_price, price_metrics

# The number ends at its '.': the search stops there instead of spelling out the certain '00' and end token.
# Measured on the base Gemma 3 270M (20 dev prompts, 8 beams, AVX2 CPU): 12.3 s with this end, 26.1 s without;
# greedy decoding took 12.9 s.
PRICE_ENDS = (".",)
BEAMS = 8
SEARCH_BATCH = 8  # prompts per search batch, each `beams` rows after the prefill (16 and 32 were no faster)


def evaluate(run: str, data: str | None = None, *, limit: int = 0, last: int = 0, with_base: bool = True,
             beams: int = BEAMS, ensemble: bool = True, readout: bool = True, runs_root: str | None = None,
             checkpoint: str | None = None, **decoding) -> dict:
    plan = evaluation.plan(TASK, run, data, limit, last, runs_root, checkpoint,
                           {**decoding, "beams": beams if beams != BEAMS else None})
    # Everything else the scores need is read and fitted now, before minutes of generation: the baselines train
    # on the run's own training rows, the ensemble is fitted on its validation rows.
    train_rows, run_valid_rows = read_splits(plan.cfg, TASK, DataReport())
    ridge = fit_text_ridge(train_rows)
    if ensemble and len(run_valid_rows) < blend.MIN_ITEMS:
        log(f"no ensemble: the run has {len(run_valid_rows)} validation rows (at least {blend.MIN_ITEMS} needed)")
    valid_rows = run_valid_rows if ensemble and len(run_valid_rows) >= blend.MIN_ITEMS else []  # the ensemble's
    settings = {f.name for f in dataclasses.fields(plan.cfg.generate)}  # decoding also carries full_vocab
    gen = dataclasses.replace(plan.cfg.generate,
                              **{k: v for k, v in decoding.items() if k in settings and v is not None})
    timings: dict = {}

    def estimates(model, tokenizer, fmt, prompts, progress: str, timing: str, states=None):
        """(price per prompt, candidates per prompt or None): the weighted median of the fine-tuned model's
        `beams` likeliest prices, or its greedy answer. states: filled with the prompts' read-out features from
        the search's prefill."""
        t0 = time.time()
        if beams > 1:
            found = candidates(model, tokenizer, fmt, prompts, beams, TASK.answer_budget(None, tokenizer),
                               batch_size=SEARCH_BATCH, progress=progress, ends=PRICE_ENDS, states=states)
            prices = [median_price(c) for c in found]
        else:
            found, prices = None, [parse_price(a) for a in generate(model, tokenizer, fmt, prompts, gen,
                                                                    progress=progress)]
        timings[timing] = round(time.time() - t0, 1)
        return prices, found

    def extra(model, tokenizer, fmt, prompts):
        # the read-out's features come free from the beam search's prefill; greedy decoding leaves them to _readout
        capture = readout and beams > 1
        test_x = head.empty_states(model, len(prompts)) if capture else None
        valid_x = head.empty_states(model, len(valid_rows)) if capture and valid_rows else None
        test = None
        if beams > 1:
            test = estimates(model, tokenizer, fmt, prompts, f"{beams}-beam median", "median_s", test_x)
        valid = None
        if valid_rows:  # the blend's input on the validation rows: the same estimator as on the test rows
            prices, found = estimates(model, tokenizer, fmt, [TASK.inference_prompt(r, fmt) for r in valid_rows],
                                      "validation (ensemble)", "ensemble_validation_s", valid_x)
            valid = prices if found is None else [mean_price(c) for c in found]
        read = None
        if readout:
            t0 = time.time()
            read = _readout(plan.run, model, tokenizer, fmt, train_rows, run_valid_rows, plan.rows, valid_rows,
                            test_x, valid_x)
            timings["readout_s"] = round(time.time() - t0, 1)
        return test, valid, read

    wanted = beams > 1 or valid_rows or readout
    p = evaluation.predict_both(TASK, plan, with_base, extra=extra if wanted else None, **decoding)
    test_search, valid_llm, read = p.extra or (None, None, None)
    test_read, valid_read = read or (None, None)
    medians, found = test_search or (None, None)
    truth = [r["price"] for r in p.rows]
    tuned = [parse_price(x) for x in p.finetuned]
    metrics = {**evaluation.metrics_head(plan, p), "timings": {**p.timings, **timings},
               "finetuned": price_metrics(truth, tuned)}
    means = [mean_price(c) for c in found] if found is not None else None
    if medians is not None:
        metrics["finetuned_median"] = {**price_metrics(truth, medians), "beams": beams}
        metrics["finetuned_mean"] = {**price_metrics(truth, means), "beams": beams}
    base = [parse_price(x) for x in p.base] if p.base is not None else None
    if base is not None:
        metrics["base"] = price_metrics(truth, base)
    if test_read is not None:
        metrics["readout"] = price_metrics(truth, test_read)
    test_ridge = ridge(p.rows)
    metrics["baselines"] = run_baselines(train_rows, p.rows, ridge)
    # The blend takes the weighted mean of the beams: the better single estimator at 1, 2 and 3 epochs on the dev
    # data, and the better blend (3 epochs, last 500: $41.72 against $44.46 fed the median)
    test_members = {"llm": means if means is not None else tuned, "readout": test_read, "ridge": test_ridge}
    valid_members = {"llm": valid_llm, "readout": valid_read,
                     "ridge": ridge(valid_rows) if valid_llm is not None else None}
    blended = _ensemble(metrics, truth, test_members, valid_members, valid_rows,
                        f"mean of {beams} beams" if means is not None else "greedy")
    predictions = _prediction_rows(p, truth, tuned, base, found, medians, means, test_read, test_ridge, blended)
    summary = {k: {"mae": metrics[k]["mae"], "hit_rate": metrics[k]["hit_rate"]}
               for k in ("base", "finetuned", "finetuned_median", "finetuned_mean", "readout", "ensemble")
               if k in metrics}
    out = p.run.write_eval(plan.name, p.source, metrics, predictions, summary)
    # The members' inputs, so that the combinations can be compared without the model. An evaluation without an
    # ensemble never finds an earlier one's file: write_eval moves aside a folder whose scores it lacks.
    if blended is not None:
        offered = metrics["ensemble"]["offered"]
        write_jsonl(out / blend.VALIDATION_FILE, [{"line": r.line, "price": r["price"],
                                                   **{m: valid_members[m][i] for m in offered}}
                                                  for i, r in enumerate(valid_rows)])
    scatter(truth, tuned, f"fine-tuned: MAE ${metrics['finetuned']['mae']:.0f}, "
                          f"hit {metrics['finetuned']['hit_rate']:.0%}", out / "scatter.png")
    print(table(metric_rows(metrics)))
    if "ensemble" in metrics:
        ens = metrics["ensemble"]
        terms = " + ".join(f"{ens['weights'][m]:.3f} x log1p({blend.LABELS[m]})" for m in ens["members"])
        print(f"ensemble: log1p(price) = {ens['weights']['intercept']:.3f} + {terms}, the lowest validation MAE of "
              f"{len(ens['validation_mae'])} combinations on {ens['weights']['fitted_on']} items "
              f"(fine-tuned: {ens['llm']}; python -m apps.price_predictor.ensemble --run ... lists them)")
    unparsed = [x for x in predictions if x["finetuned"] is None][:5]
    for x in unparsed:
        print(f"unparsed answer (line {x['line']}): {x['finetuned_answer']!r}")
    print(f"wrote {out}/metrics.json, predictions.jsonl and scatter.png")
    return metrics


def _prediction_rows(p, truth, tuned, base, found, medians, means, test_read, test_ridge, blended) -> list[dict]:
    """One predictions.jsonl row per test item; the candidates (answer, log-probability) behind the median are
    kept so that other estimators can be scored from the same search."""
    n = len(truth)
    rows = [{"line": r.line, "title": r["title"], "category": r.values.get("category") or "", "price": t,
             "finetuned_answer": ft_raw, "finetuned": ft, "finetuned_hit": ft is not None and is_hit(t, ft),
             "base_answer": b_raw, "base": b}
            for r, t, ft_raw, ft, b_raw, b in zip(p.rows, truth, p.finetuned, tuned, p.base or [None] * n,
                                                  base or [None] * n)]
    for row, median, mean, cands in zip(rows, medians or [], means or [], found or []):
        row["finetuned_median"], row["finetuned_mean"] = median, None if mean is None else round(mean, 2)
        row["finetuned_candidates"] = [[text, round(score, 4)] for text, score in cands]
    for row, value in zip(rows, test_read or []):
        row["readout"] = round(value, 2)
    for row, ridge_value in zip(rows, test_ridge):  # scored in the table with or without an ensemble
        row["ridge"] = round(ridge_value, 2)
    for row, value in zip(rows, blended or []):
        row["ensemble"] = round(value, 2)
    return rows


def _readout(run, model, tokenizer, fmt, train_rows, run_valid_rows, rows, valid_rows, test_x=None, valid_x=None):
    """(read-out price per test row, per ensemble validation row or None): the run's saved read-out, or one
    fitted now on its training rows. test_x, valid_x: the features of the test rows and of the ensemble's
    validation rows (= the run's) when the caller has them already."""
    fitted = head.load(run)
    if valid_x is None and (valid_rows or fitted is None):
        valid_x = head.states(model, tokenizer, fmt, run_valid_rows, "read-out: validation rows")
    if fitted is None:
        fitted = head.fit_and_save(run, model, tokenizer, fmt, train_rows, run_valid_rows, valid_x)
    if test_x is None:
        test_x = head.states(model, tokenizer, fmt, rows, "read-out")
    return (fitted.predict(test_x.numpy(), [text_of(r) for r in rows]),
            fitted.predict(valid_x.numpy(), [text_of(r) for r in valid_rows]) if valid_rows else None)


def _ensemble(metrics, truth, test_members: dict, valid_members: dict, valid_rows, source: str) -> list[float] | None:
    """Choose the ensemble among the members that have estimates on the validation rows (ensemble.choose) and score
    it on the test rows (into metrics); the ensemble's prices."""
    if valid_members["llm"] is None:
        return None
    offered = [m for m in ("llm", "readout", "ridge") if valid_members[m] is not None]
    try:
        chosen, candidates = blend.choose({m: valid_members[m] for m in offered}, [r["price"] for r in valid_rows])
    except ValueError as e:  # too few parsed validation answers: the other rows still stand
        log(f"no ensemble: {e}")
        return None
    blended = chosen.blend.predict({m: test_members[m] for m in offered})
    metrics["ensemble"] = {**price_metrics(truth, blended), "members": list(chosen.blend.weights),
                           "chosen": chosen.name, "offered": offered, "weights": chosen.blend.summary(),
                           "validation_mae": candidates, "llm": source,
                           "ridge_fallbacks": sum(x is None for x in test_members["llm"])}
    return blended


def main(argv=None):
    parser = eval_parser(TASK, __doc__)
    parser.add_argument("--beams", type=int, default=BEAMS,
                        help=f"also score the weighted median and mean of the fine-tuned model's N likeliest "
                             f"prices (beam search, each prompt read once; about the cost of greedy); 0 = greedy "
                             f"only (default {BEAMS})")
    parser.add_argument("--no-readout", action="store_true",
                        help="skip the hidden-state read-out (a run without a saved one fits it here: one forward "
                             "pass over its training rows)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="skip the ensemble (fine-tuned + read-out + TF-IDF ridge), which generates on the "
                             "run's validation rows too")
    args = parser.parse_args(argv)

    def work():
        check_counts(args)

        def score(run, checkpoint, with_base):
            return evaluate(run, args.data, limit=args.limit, last=args.last, with_base=with_base,
                            full_vocab=args.full_vocab, beams=args.beams, ensemble=not args.no_ensemble,
                            readout=not args.no_readout, runs_root=args.runs_root, checkpoint=checkpoint,
                            **decoding_overrides(args))

        evaluation.score_each(TASK, args.run, args.runs_root, args.checkpoint, not args.no_base, score)

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
