"""Several price estimators combined: a linear blend of their log prices, chosen and fitted on the run's validation
items and scored on the test items like every other model. The members: the fine-tuned model's answer ("llm"),
its hidden-state read-out ("readout", readout.py) and the TF-IDF ridge baseline ("ridge").

    python -m apps.price_predictor.ensemble --run runs/price_predictor/<run> [--eval NAME]
lists every combination with its validation and test MAE, from the files an evaluation wrote (no model needed).

    log1p(price) = intercept + sum over members of w * log1p(member's estimate),  w >= 0

Least squares on log prices (non-negative weights, free intercept): the members err in different places (the
LLM spells the price digit by digit, the read-out maps the same model's state linearly, the ridge counts words
seen in training), and an error's size scales with the price, so the blend is fitted on relative errors. An
item whose LLM answer held no price gets the ridge estimate.

`choose` does not take the blend of all members for granted: with the item's words in the read-out, the three
fitted weights scored worse on the dev data's holdout than the read-out alone in all three measurements (by
$0.23-1.88), the ridge's weight fitted to how well word counts happen to do on 155 validation items. So every
member alone and the blend of every subset compete on the validation items, a blend scored by leave-one-out
(each item predicted by the blend fitted on the others), and the lowest mean absolute error in dollars wins.
"""
from __future__ import annotations

import dataclasses
import math

from shared import runs
from shared.cli import find_run, run_cli, run_parser
from shared.config import ConfigError

from .task import MAX_PRICE, MIN_PRICE, TASK, price_metrics

MIN_ITEMS = 10  # fewer parsed validation answers than this fit nothing worth trusting
LABELS = {"llm": "fine-tuned", "readout": "read-out", "ridge": "TF-IDF ridge"}
FALLBACK = "ridge"  # the member that stands in for an unparsed LLM answer


def name(members, chosen: str = "") -> str:
    """The ensemble's row name in the tables, e.g. 'ensemble: fine-tuned + read-out + TF-IDF ridge'; where one
    member scored best, 'ensemble: read-out alone' (as it is) or 'ensemble: read-out, rescaled' (fitted).
    chosen: the candidate's name, as metrics.json records it."""
    if len(members) == 1:
        return f"ensemble: {_labels(members)}" + (" alone" if chosen.startswith("alone") else ", rescaled")
    return f"ensemble: {_labels(members)}"


def _labels(members) -> str:
    return " + ".join(LABELS.get(m, m) for m in members)


def _candidate(members, fitted: bool) -> str:
    """A candidate's name in the metrics, e.g. 'fitted: fine-tuned + read-out' or 'alone: read-out'."""
    return ("fitted: " if fitted else "alone: ") + _labels(members)


@dataclasses.dataclass
class Blend:
    intercept: float
    weights: dict[str, float]  # member -> weight of log1p(its estimate), in the members' order
    fitted_on: int  # validation items with a parsed LLM answer

    def predict(self, estimates: dict[str, list[float | None]]) -> list[float]:
        """One price per item, within the prices the task accepts; the ridge estimate where the LLM gave none."""
        out = []
        for i in range(len(estimates[FALLBACK])):
            if any(estimates[m][i] is None for m in self.weights):
                out.append(estimates[FALLBACK][i])
                continue
            value = self.intercept + sum(w * math.log1p(max(estimates[m][i], 0.0)) for m, w in self.weights.items())
            out.append(float(_to_price(value)))
        return out

    def summary(self) -> dict:
        """The weights as metrics.json records them: {"intercept", one key per member, "fitted_on"}."""
        return {"intercept": self.intercept, **self.weights, "fitted_on": self.fitted_on}


def _kept(estimates: dict[str, list[float | None]], truth: list[float]) -> list[int]:
    """The validation items every member has an estimate for; raises if too few to fit on."""
    if FALLBACK not in estimates:
        raise ValueError(f"the ensemble needs the '{FALLBACK}' member, got {list(estimates)}")
    kept = [i for i in range(len(truth)) if all(e[i] is not None for e in estimates.values())]
    if len(kept) < MIN_ITEMS:
        raise ValueError(f"the ensemble needs at least {MIN_ITEMS} validation items with a parsed LLM answer, "
                         f"got {len(kept)}")
    return kept


def _to_price(logs):
    """log1p prices (a number or an array) back to prices within those the task accepts."""
    import numpy as np

    return np.clip(np.expm1(logs), MIN_PRICE, MAX_PRICE)


def _logs(estimates: dict[str, list[float | None]], truth: list[float]):
    """(members, their log1p estimates [items x members], log1p true prices) on the items every member has an
    estimate for: every subset is fitted and scored on the same items."""
    import numpy as np

    kept = _kept(estimates, truth)
    members = list(estimates)
    x = np.array([[math.log1p(max(estimates[m][i], 0.0)) for m in members] for i in kept])
    return members, x, np.log1p(np.array([truth[i] for i in kept]))


def _least_squares(x, y):
    from sklearn.linear_model import LinearRegression

    return LinearRegression(positive=True).fit(x, y)


def _blend(x, y, members: list[str]) -> Blend:
    model = _least_squares(x, y)
    return Blend(round(float(model.intercept_), 6),
                 {m: round(float(w), 6) for m, w in zip(members, model.coef_)}, len(y))


def fit(estimates: dict[str, list[float | None]], truth: list[float]) -> Blend:
    """Fit the blend of all members on validation items: each member's estimates (None where the LLM's answer was
    unparsed) and the true prices. Must include the ridge, which stands in for an unparsed answer."""
    members, x, y = _logs(estimates, truth)
    return _blend(x, y, members)


@dataclasses.dataclass
class Candidate:
    name: str  # e.g. "fitted: fine-tuned + read-out", "alone: read-out"
    blend: Blend  # fitted on all the validation items, or weight 1 on one member as it is
    validation_mae: float  # dollars; a fitted blend's by leave-one-out
    fitted_numbers: int  # weights and intercept fitted on the validation items (0 for a member alone)


def candidates(estimates: dict[str, list[float | None]], truth: list[float]) -> list[Candidate]:
    """Each member alone as it is (weight 1, no intercept: nothing fitted on these items) and the fitted blend of
    each non-empty subset of members, with their validation MAE: a blend's by leave-one-out (each item predicted
    by the blend fitted on the others), so that fitting on the items scored does not flatter it."""
    import itertools

    import numpy as np

    members, logs, y = _logs(estimates, truth)

    def mae(log_estimates) -> float:
        return round(float(np.mean(np.abs(_to_price(log_estimates) - np.expm1(y)))), 4)

    out = [Candidate(_candidate([m], False), Blend(0.0, {m: 1.0}, len(y)), mae(logs[:, j]), 0)
           for j, m in enumerate(members)]
    for size in range(1, len(members) + 1):
        for subset in itertools.combinations(range(len(members)), size):
            x = logs[:, subset]
            left_out = np.empty(len(y))
            for i in range(len(y)):
                others = np.arange(len(y)) != i
                left_out[i] = _least_squares(x[others], y[others]).predict(x[i:i + 1])[0]
            chosen = [members[j] for j in subset]
            out.append(Candidate(_candidate(chosen, True), _blend(x, y, chosen), mae(left_out), size + 1))
    return out


def best(found: list[Candidate]) -> Candidate:
    """The candidate with the lowest validation MAE; a tie goes to the one with fewer numbers fitted on it."""
    return min(found, key=lambda c: (c.validation_mae, c.fitted_numbers))


def choose(estimates: dict[str, list[float | None]], truth: list[float]) -> tuple[Candidate, dict[str, float]]:
    """(the best candidate, every candidate's validation MAE by name)."""
    found = candidates(estimates, truth)
    return best(found), {c.name: c.validation_mae for c in found}


VALIDATION_FILE = "ensemble_validation.jsonl"  # written by evaluate beside predictions.jsonl
TEST_FIELDS = {"readout": "readout", "ridge": "ridge"}  # member -> its field in predictions.jsonl ("llm": below)


def compare(run: runs.Run, name: str) -> list[tuple[Candidate, float]]:
    """Every candidate of one evaluation with its MAE on that evaluation's test rows, from the files `evaluate`
    wrote (no model): what the ensemble's choice on the validation items would have cost or saved on the test."""
    metrics, rows = run.read_eval(name)
    path = run.eval_dir(name) / VALIDATION_FILE
    if not metrics or "ensemble" not in metrics or not path.is_file():
        raise ConfigError(f"{run.eval_dir(name)} has no {VALIDATION_FILE}: run evaluate again (its ensemble "
                          f"writes the members' validation estimates there)")
    ens = metrics["ensemble"]
    offered = ens.get("offered", ens["members"])
    valid = runs.read_jsonl(path)
    for n, row in enumerate(valid, 1):
        for field in ("price", *offered):
            if field not in row or not (row[field] is None or isinstance(row[field], (int, float))):
                raise ConfigError(f"{path}, line {n}: field '{field}' is missing or not a number: run evaluate again")
    # the LLM member is the beams' weighted mean where the evaluation searched, else the greedy answer
    fields = {**TEST_FIELDS, "llm": "finetuned_mean" if any("finetuned_mean" in r for r in rows) else "finetuned"}
    test = {m: [r.get(fields[m]) for r in rows] for m in offered}
    truth = [r["price"] for r in rows]
    found = candidates({m: [v[m] for v in valid] for m in offered}, [v["price"] for v in valid])
    return [(c, price_metrics(truth, c.blend.predict(test))["mae"]) for c in found]


def main(argv=None):
    p = run_parser(TASK, TASK.command("ensemble"), __doc__)
    p.add_argument("--eval", metavar="NAME", help="one evaluation of the run, e.g. 'test' (default: each that has "
                                                  f"{VALIDATION_FILE})")
    args = p.parse_args(argv)

    def work():
        run = find_run(TASK, args)
        names = [args.eval] if args.eval else sorted(n for n in run.record.evaluations
                                                     if (run.eval_dir(n) / VALIDATION_FILE).is_file())
        if not names:
            raise ConfigError(f"{run.path} has no evaluation with {VALIDATION_FILE}: run "
                              f"{TASK.command('evaluate')} --run {run.path}")
        for name in names:
            scored = compare(run, name)
            chosen = best([c for c, _ in scored])
            print(f"{run.eval_dir(name)}: candidates on {chosen.blend.fitted_on} validation items")
            print(f"  {'candidate':<46} {'validation MAE $':>16} {'test MAE $':>11}")
            for c, test_mae in sorted(scored, key=lambda x: x[0].validation_mae):
                mark = "  <- the ensemble" if c is chosen else ""
                print(f"  {c.name:<46} {c.validation_mae:>16.2f} {test_mae:>11.2f}{mark}")

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
