"""The fine-tuned model and the TF-IDF ridge baseline combined: a linear blend of their log prices, fitted on the
run's validation items and scored on the test items like every other model.

    log1p(price) = intercept + w_llm * log1p(llm estimate) + w_ridge * log1p(ridge estimate),  w >= 0

Least squares on log prices (non-negative weights, free intercept): the two models err in different places
(the LLM reads the listing, the ridge counts words seen in training), and an error's size scales with the price,
so the blend is fitted on relative errors. An item whose LLM answer held no price gets the ridge estimate.
"""
from __future__ import annotations

import dataclasses
import math

from .task import MAX_PRICE, MIN_PRICE

NAME = "ensemble: fine-tuned + TF-IDF ridge"
MIN_ITEMS = 10  # fewer parsed validation answers than this fit nothing worth trusting


@dataclasses.dataclass
class Blend:
    intercept: float
    llm: float  # weight of log1p(LLM estimate)
    ridge: float  # weight of log1p(ridge estimate)
    fitted_on: int  # validation items with a parsed LLM answer

    def predict(self, llm: list[float | None], ridge: list[float]) -> list[float]:
        """One price per item, within the prices the task accepts; the ridge estimate where the LLM gave none."""
        out = []
        for guess, r in zip(llm, ridge):
            if guess is None:
                out.append(r)
                continue
            value = self.intercept + self.llm * math.log1p(max(guess, 0.0)) + self.ridge * math.log1p(max(r, 0.0))
            out.append(min(max(math.expm1(value), MIN_PRICE), MAX_PRICE))
        return out


def fit(llm: list[float | None], ridge: list[float], truth: list[float]) -> Blend:
    """Fit the blend on validation items (LLM estimates, None where unparsed; ridge estimates; true prices)."""
    from sklearn.linear_model import LinearRegression

    kept = [(guess, r, t) for guess, r, t in zip(llm, ridge, truth) if guess is not None]
    if len(kept) < MIN_ITEMS:
        raise ValueError(f"the ensemble needs at least {MIN_ITEMS} validation items with a parsed LLM answer, "
                         f"got {len(kept)}")
    x = [[math.log1p(max(guess, 0.0)), math.log1p(max(r, 0.0))] for guess, r, _ in kept]
    y = [math.log1p(t) for _, _, t in kept]
    model = LinearRegression(positive=True).fit(x, y)
    return Blend(round(float(model.intercept_), 6), round(float(model.coef_[0]), 6),
                 round(float(model.coef_[1]), 6), len(kept))
