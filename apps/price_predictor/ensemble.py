"""Several price estimators combined: a linear blend of their log prices, fitted on the run's validation items and
scored on the test items like every other model. The members: the fine-tuned model's answer ("llm"), its
hidden-state read-out ("readout", readout.py) and the TF-IDF ridge baseline ("ridge").

    log1p(price) = intercept + sum over members of w * log1p(member's estimate),  w >= 0

Least squares on log prices (non-negative weights, free intercept): the members err in different places (the
LLM spells the price digit by digit, the read-out maps the same model's state linearly, the ridge counts words
seen in training), and an error's size scales with the price, so the blend is fitted on relative errors. An
item whose LLM answer held no price gets the ridge estimate.
"""
from __future__ import annotations

import dataclasses
import math

from .task import MAX_PRICE, MIN_PRICE

MIN_ITEMS = 10  # fewer parsed validation answers than this fit nothing worth trusting
LABELS = {"llm": "fine-tuned", "readout": "read-out", "ridge": "TF-IDF ridge"}
FALLBACK = "ridge"  # the member that stands in for an unparsed LLM answer


def name(members) -> str:
    """The ensemble's row name in the tables, e.g. 'ensemble: fine-tuned + read-out + TF-IDF ridge'."""
    return "ensemble: " + " + ".join(LABELS.get(m, m) for m in members)


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
            out.append(min(max(math.expm1(value), MIN_PRICE), MAX_PRICE))
        return out

    def summary(self) -> dict:
        """The weights as metrics.json records them: {"intercept", one key per member, "fitted_on"}."""
        return {"intercept": self.intercept, **self.weights, "fitted_on": self.fitted_on}


def fit(estimates: dict[str, list[float | None]], truth: list[float]) -> Blend:
    """Fit the blend on validation items: each member's estimates (None where the LLM's answer was unparsed) and
    the true prices. Must include the ridge, which stands in for an unparsed answer."""
    from sklearn.linear_model import LinearRegression

    if FALLBACK not in estimates:
        raise ValueError(f"the ensemble needs the '{FALLBACK}' member, got {list(estimates)}")
    members = list(estimates)
    kept = [i for i in range(len(truth)) if all(estimates[m][i] is not None for m in members)]
    if len(kept) < MIN_ITEMS:
        raise ValueError(f"the ensemble needs at least {MIN_ITEMS} validation items with a parsed LLM answer, "
                         f"got {len(kept)}")
    x = [[math.log1p(max(estimates[m][i], 0.0)) for m in members] for i in kept]
    model = LinearRegression(positive=True).fit(x, [math.log1p(truth[i]) for i in kept])
    return Blend(round(float(model.intercept_), 6),
                 {m: round(float(w), 6) for m, w in zip(members, model.coef_)}, len(kept))
