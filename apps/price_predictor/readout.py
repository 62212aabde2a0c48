"""The price read off the fine-tuned model's hidden state instead of its digits: a ridge regression of log price
on the last layer's state at the prompt's end ("Price is $"), fitted on the run's training rows.

    python -m apps.price_predictor.readout --run runs/price_predictor/<run>     # fit it for a finished run

Why: that state is what the model knows about the item just before it writes the first digit. Decoding spells
the price one digit at a time and an early wrong digit costs a factor of ten; a linear read-out of the same
state has no such cliff and errs elsewhere. Measured on the dev data (3 epochs, last 500 items, AMD EPYC with
avx512_bf16): the read-out alone $41.13 MAE, the 8-beam mean $43.42; both go into the ensemble (ensemble.py): $40.94.

The item's own words join the state in the same ridge (the TF-IDF features of the text ridge baseline, scaled by
one of TEXT_WEIGHTS): the state knows what the model learnt, the words name what it may have missed (a brand, a
size). One fit, not a blend of two: the weights of both are chosen together, on the 2,947 training rows, where the
blend is fitted on 155 validation rows. Same data, 3 epochs, float32 Xeon: read-out $40.29 -> $39.52, ensemble
$40.25 -> $39.75.

The fit reads every training row once (a forward pass, no generation; 4 min 16 s for 2,947 + 155 rows on an Intel
Xeon with AMX, 8 min on the EPYC), so `train` fits it at the end of a price run and `evaluate` reuses it (taking
the test prompts' features from its beam search's prefill). It is kept in <run>/readout.json with a digest of
the weights it was fitted on: weights trained further are refitted, never silently reused.
The ridge strength and text weight are the pair with the lowest 5-fold cross-validated MAE on the training rows.
Picked on the 155 validation rows of the dev run instead, the strengths' MAEs lay within $0.70 of each other
($31.35 to $32.05, $35.11 for the strongest) and the pick moved between runs; the validation MAE is still recorded.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from shared import runs
from shared.cli import find_run, run_cli, run_parser
from shared.config import ConfigError
from shared.data import DataReport, Row
from shared.generate import load_run, prompt_states
from shared.log import log

from .baselines import text_of, text_vectorizer
from .task import MAX_PRICE, MIN_PRICE, TASK

FILE = "readout.json"
ALPHAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)
DEFAULT_ALPHA = 1000.0  # with too few training rows to cross-validate: the middle of the range
FOLDS = 5
BATCH = 16  # prompts per forward pass: 256 dev prompts took 26 s at 16, 58 s at 64 (2-core AMX CPU)
# The item's TF-IDF text features (baselines.text_vectorizer) join the state, scaled by one of these against the
# standardised state's unit spread; 0 = the state alone. 100 with alpha 10,000 penalises the text as the text
# ridge baseline does, so the grid runs from "state with a little text" to "text ridge with a little state". On
# the dev data (3 epochs, float32) cross-validation picked 30: read-out $40.29 -> $39.52.
TEXT_WEIGHTS = (0.0, 10.0, 30.0, 100.0)
# The text block is fitted through the rows' n x n Gram matrix (its columns run to 50,000); one eigendecomposition
# per fold and weight took 1.2 s at 2,357 rows (2-core Xeon) and grows with the cube of the rows, so above this
# many training rows the read-out keeps the state alone.
TEXT_MAX_ROWS = 6000


@dataclasses.dataclass
class Readout:
    mean: list[float]  # per-feature standardisation, from the training rows
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    weights_digest: str  # sha256 of the weight files it was fitted on
    fitted_on: int
    valid_mae: dict = dataclasses.field(default_factory=dict)  # "alpha" or "alpha, text w" -> validation MAE
    cv_mae: dict = dataclasses.field(default_factory=dict)  # the same keys -> cross-validated MAE, training rows
    text_weight: float = 0.0  # 0: the state alone (every read-out saved before the text block)
    text: dict | None = None  # {"terms", "idf", "coef"}: the text block's vocabulary, its idf and coefficients

    def predict(self, features, texts: list[str] | None = None) -> list[float]:
        """One price per feature row (and item text, baselines.text_of, when the read-out has a text block),
        within the prices the task accepts."""
        import numpy as np

        logs = _state_logs(np.asarray(features, dtype=np.float64), np.asarray(self.mean), np.asarray(self.scale),
                           np.asarray(self.coef), self.intercept)
        if self.text:
            if texts is None or len(texts) != len(logs):
                raise ValueError("this read-out reads the items' text too: pass one text per feature row")
            vectorizer = text_vectorizer(0, self.text["terms"])
            vectorizer.idf_ = np.asarray(self.text["idf"])
            logs = logs + vectorizer.transform(texts) @ np.asarray(self.text["coef"])
        return _clip(logs).tolist()


def _state_logs(x, mean, scale, coef, intercept):
    return (x - mean) / scale @ coef + intercept


def _clip(logs):
    """log1p prices -> prices within the ones the task accepts."""
    import numpy as np

    return np.clip(np.expm1(logs), MIN_PRICE, MAX_PRICE)


def _key(alpha: float, weight: float) -> str:
    """The cv_mae / valid_mae key of a strength and text weight: "300.0" for the state alone (as saved before the
    text block), "300.0, text 30" with it."""
    return str(alpha) if not weight else f"{alpha}, text {weight:g}"


def fit(train_x, train_prices: list[float], valid_x=None, valid_prices: list[float] | None = None,
        digest: str = "", train_texts: list[str] | None = None, valid_texts: list[str] | None = None) -> Readout:
    """Ridge on standardised features (and, given train_texts, the items' TF-IDF scaled by each of TEXT_WEIGHTS)
    -> log1p(price), with the alpha and text weight of the lowest cross-validated MAE on the training rows
    (DEFAULT_ALPHA and the state alone with fewer than 2 rows per fold); the validation rows' MAE is recorded."""
    import numpy as np

    x = np.asarray(train_x, dtype=np.float64)
    if len(x) < 2:
        raise ConfigError(f"the read-out needs at least 2 training rows, got {len(x)}")
    prices = np.asarray(train_prices, dtype=np.float64)
    texts = None if train_texts is None else np.asarray(train_texts, dtype=object)
    can_cv = len(x) >= 2 * FOLDS
    weights = TEXT_WEIGHTS if texts is not None and can_cv and len(x) <= TEXT_MAX_ROWS else (0.0,)
    if texts is not None and can_cv and len(x) > TEXT_MAX_ROWS:
        log(f"read-out: {len(x)} training rows, more than {TEXT_MAX_ROWS}: the hidden state alone, no text block")
    cv: dict[str, float] = {}
    if can_cv:
        try:
            cv = _cross_validate(x, prices, texts, weights)
        except ValueError as e:  # sklearn's "empty vocabulary": no word repeats across the rows of a fold
            log(f"read-out: no text block ({e}); the hidden state alone")
            weights = (0.0,)
            cv = _cross_validate(x, prices, texts, weights)
    best_alpha, best_weight = (min(((a, w) for w in weights for a in ALPHAS), key=lambda aw: cv[_key(*aw)])
                               if cv else (DEFAULT_ALPHA, 0.0))
    scores: dict[str, float] = {}
    chosen = None
    text = _Text(texts) if any(weights) else None
    for w in weights:
        paths = _paths(x, prices, text, w)
        if w == best_weight:
            chosen = paths
        if valid_x is not None and len(valid_x) and (not w or valid_texts is not None):
            for a, guesses in zip(ALPHAS, paths.predict_each(np.asarray(valid_x, dtype=np.float64), valid_texts)):
                scores[_key(a, w)] = round(float(np.abs(guesses - np.asarray(valid_prices)).mean()), 4)
    coef, intercept, block = chosen.solution(ALPHAS.index(best_alpha))
    return Readout(chosen.mean.tolist(), chosen.scale.tolist(), coef.tolist(), intercept, best_alpha, digest,
                   len(x), scores, cv, best_weight, block)


def _cross_validate(x, prices, texts, weights) -> dict[str, float]:
    """The 5-fold cross-validated MAE of every (alpha, text weight), keyed as _key names them."""
    import numpy as np

    folds = np.array_split(np.random.default_rng(0).permutation(len(x)), FOLDS)
    errors = {_key(a, w): 0.0 for w in weights for a in ALPHAS}
    for held in folds:
        kept = np.setdiff1d(np.arange(len(x)), held)
        text = _Text(texts[kept]) if any(weights) else None
        for w in weights:
            paths = _paths(x[kept], prices[kept], text, w)
            for a, guesses in zip(ALPHAS, paths.predict_each(x[held], None if texts is None else texts[held])):
                errors[_key(a, w)] += float(np.abs(guesses - prices[held]).sum())
    return {k: round(e / len(x), 4) for k, e in errors.items()}


def _paths(x, prices, text, weight: float):
    return _TextRidgePaths(x, prices, text, weight) if weight else _ridge(x, prices, ALPHAS)


@dataclasses.dataclass
class _RidgePaths:
    """Ridge solutions of one standardised design for several strengths, from one SVD."""
    mean: object
    scale: object
    vt: object
    shrunk: list  # per alpha: s / (s^2 + alpha) * U^T y
    intercept: float

    def coef(self, i: int):
        return self.vt.T @ self.shrunk[i]

    def solution(self, i: int):
        """(state coefficients, intercept, text block or None) for ALPHAS[i]."""
        return self.coef(i), self.intercept, None

    def predict_each(self, x, texts=None) -> list:
        """Per alpha, the prices for rows x, within the prices the task accepts."""
        return [_clip(_state_logs(x, self.mean, self.scale, self.coef(i), self.intercept))
                for i in range(len(self.shrunk))]


def _ridge(x, prices, alphas) -> _RidgePaths:
    """Ridge of log1p(price) on x standardised by its own mean and spread (the intercept unpenalised, as
    sklearn's Ridge), for every alpha at the cost of one SVD."""
    import numpy as np

    mean, scale = _standardisation(x)
    y = np.log1p(prices)
    u, s, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    uty = u.T @ (y - y.mean())
    return _RidgePaths(mean, scale, vt, [s / (s * s + a) * uty for a in alphas], float(y.mean()))


def _standardisation(x):
    """Per-feature mean and spread of the training rows (the spread kept off 0 for a constant feature)."""
    return x.mean(0), x.std(0) + 1e-6


class _Text:
    """The TF-IDF block of some training rows: the vectorizer fitted on them, their features and mean, and their
    centred inner products (shared by every text weight)."""

    def __init__(self, texts):
        import numpy as np

        self.vectorizer = text_vectorizer(len(texts))
        self.t = self.vectorizer.fit_transform(list(texts))
        self.mean = np.asarray(self.t.mean(0)).ravel()
        self.gram = self.cross(self.t)

    def cross(self, t):
        """Centred inner products of rows t with the training rows."""
        m = self.mean
        return (t @ self.t.T).toarray() - (t @ m)[:, None] - (self.t @ m)[None, :] + m @ m


class _TextRidgePaths:
    """Ridge of log1p(price) on [standardised state, weight x TF-IDF of the text] (the intercept unpenalised, as
    sklearn's Ridge), for every alpha from one eigendecomposition of the rows' centred Gram matrix: the TF-IDF
    block's columns run to tens of thousands, the rows to a few thousand."""

    def __init__(self, x, prices, text: _Text, weight: float):
        import numpy as np

        self.mean, self.scale = _standardisation(x)
        self.z = (x - self.mean) / self.scale
        self.text, self.w2 = text, weight * weight
        y = np.log1p(prices)
        self.y_mean = float(y.mean())
        s2, self.u = np.linalg.eigh(self.z @ self.z.T + self.w2 * text.gram)
        self.s2 = np.clip(s2, 0.0, None)
        self.uty = self.u.T @ (y - self.y_mean)

    def _dual(self, i: int):
        return self.u @ (self.uty / (self.s2 + ALPHAS[i]))

    def predict_each(self, x, texts) -> list:
        gram = (x - self.mean) / self.scale @ self.z.T + self.w2 * self.text.cross(
            self.text.vectorizer.transform(list(texts)))
        return [_clip(gram @ self._dual(i) + self.y_mean) for i in range(len(ALPHAS))]

    def solution(self, i: int):
        """(state coefficients, intercept, text block) for ALPHAS[i]: the primal form of the dual solution."""
        dual, text = self._dual(i), self.text
        text_coef = self.w2 * (text.t.T @ dual - text.mean * dual.sum())
        block = {"terms": text.vectorizer.get_feature_names_out().tolist(),
                 "idf": [round(float(v), 6) for v in text.vectorizer.idf_],
                 "coef": [float(f"{v:.6g}") for v in text_coef]}
        return self.z.T @ dual, self.y_mean - float(text_coef @ text.mean), block


_digests: dict[tuple, str] = {}  # (path, inode, size, mtime) of each weight file -> digest


def weights_digest(run: runs.Run) -> str:
    """sha256 of the run's weight files, read again only when one of them changed on disk (predict and the demo
    check the read-out on every request; a full model's weights are gigabytes)."""
    files = sorted(run.weights_dir.glob("*.safetensors")) + sorted(run.weights_dir.glob("*.bin"))
    key = tuple((str(f), st.st_ino, st.st_size, st.st_mtime_ns) for f, st in ((f, f.stat()) for f in files))
    if key not in _digests:
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            with open(f, "rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def load(run: runs.Run) -> Readout | None:
    """The run's read-out if it was fitted on the weights the run holds now."""
    path = run.weights_home / FILE
    if not path.is_file():
        return None
    try:
        saved = Readout(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        log(f"{path} is unreadable ({e.__class__.__name__}): fitting the read-out again")
        return None
    if saved.weights_digest != weights_digest(run):
        log(f"{path} was fitted on other weights than {run.weights_dir}: fitting the read-out again")
        return None
    return saved


def estimate(run: runs.Run, model, tokenizer, fmt, rows: list[Row]) -> list[float] | None:
    """The run's saved read-out applied to rows (predict, the demo); None when the run has none for its weights."""
    fitted = load(run)
    return None if fitted is None else fitted.predict(states(model, tokenizer, fmt, rows).numpy(),
                                                      [text_of(r) for r in rows])


def empty_states(model, n: int):
    """Room for n rows of features, for `shared.generate.candidates(states=...)` to fill."""
    import torch

    return torch.full((n, model.config.get_text_config().hidden_size), float("nan"))


def states(model, tokenizer, fmt, rows: list[Row], progress: str | None = None):
    return prompt_states(model, tokenizer, [TASK.inference_prompt(r, fmt) for r in rows], BATCH, progress)


def prepare(run: runs.Run, model, tokenizer, fmt, train_rows: list[Row], valid_rows: list[Row]) -> Readout:
    """The run's read-out: the saved one, or fitted now (one forward pass over the training rows) and saved."""
    return load(run) or fit_and_save(run, model, tokenizer, fmt, train_rows, valid_rows)


def fit_and_save(run: runs.Run, model, tokenizer, fmt, train_rows: list[Row], valid_rows: list[Row],
                 valid_x=None) -> Readout:
    """Fit the read-out on the run's weights and write it to <run>/readout.json. valid_x: the validation rows'
    features when the caller already has them."""
    digest = weights_digest(run)  # of the weights loaded now: a checkpoint may be rotated away while this runs
    log(f"fitting the hidden-state read-out on {len(train_rows)} training rows (one forward pass each)")
    train_x = states(model, tokenizer, fmt, train_rows, "read-out: training rows")
    if valid_x is None and valid_rows:
        valid_x = states(model, tokenizer, fmt, valid_rows, "read-out: validation rows")
    fitted = fit(train_x.numpy(), [r["price"] for r in train_rows],
                 None if valid_x is None else valid_x.numpy(), [r["price"] for r in valid_rows], digest,
                 [text_of(r) for r in train_rows], [text_of(r) for r in valid_rows])
    if runs.is_main_process():
        tmp = run.weights_home / (FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(dataclasses.asdict(fitted)), encoding="utf-8")
            tmp.replace(run.weights_home / FILE)  # never a half-written file
        except OSError as e:  # a full disk, or a checkpoint the training rotated away: the command goes on
            log(f"could not keep the read-out in {run.weights_home} ({e.strerror or e}); it serves this command "
                "only and will be fitted again next time")
    key = _key(fitted.alpha, fitted.text_weight)
    said = [f"cross-validated MAE ${fitted.cv_mae[key]:.2f}"] if fitted.cv_mae else []
    if key in fitted.valid_mae:
        said.append(f"validation MAE ${fitted.valid_mae[key]:.2f} over {len(valid_rows)} rows")
    log(f"read-out: {_described(fitted)}" + "".join(f", {x}" for x in said))
    return fitted


def _described(fitted: Readout) -> str:
    return f"alpha {fitted.alpha:g}, " + (f"text weight {fitted.text_weight:g}" if fitted.text else "the state alone")


def fit_run(run: runs.Run) -> Readout:
    """Fit (or reuse) a finished run's read-out: `train`'s last step, and this module's command."""
    from shared.train import read_splits

    train_rows, valid_rows = read_splits(run.config(), TASK, DataReport())
    model, tokenizer, fmt, _ = load_run(run)
    return prepare(run, model, tokenizer, fmt, train_rows, valid_rows)


def after_training(run_dir: Path) -> None:
    fit_run(runs.find_run(str(run_dir), TASK.name, None, train_command=TASK.command("train")))


def main(argv=None):
    args = run_parser(TASK, TASK.command("readout"), __doc__).parse_args(argv)

    def work():
        run = find_run(TASK, args)
        fitted = fit_run(run)

        def shown(maes: dict) -> str:
            """One line per text weight: 'state alone: 10: $28.53, 30: $27.93, ...'."""
            lines: dict[str, list[str]] = {}
            for key, mae in maes.items():
                alpha, _, weight = key.partition(", ")
                lines.setdefault(weight or "state alone", []).append(f"{float(alpha):g}: ${mae:.2f}")
            return "".join(f"\n    {w}: {', '.join(v)}" for w, v in lines.items())

        print(f"read-out of {run.path}: {_described(fitted)}, fitted on {fitted.fitted_on} training rows\n"
              f"  cross-validated MAE by alpha:{shown(fitted.cv_mae) or ' too few training rows'}\n"
              f"  validation MAE by alpha:{shown(fitted.valid_mae) or ' no validation rows'}\n"
              f"wrote {run.weights_home / FILE}")

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
