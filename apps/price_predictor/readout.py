"""The price read off the fine-tuned model's hidden state instead of its digits: a ridge regression of log price
on the last layer's state at the prompt's end ("Price is $"), fitted on the run's training rows.

    python -m apps.price_predictor.readout --run runs/price_predictor/<run>     # fit it for a finished run

Why: that state is what the model knows about the item just before it writes the first digit. Decoding spells
the price one digit at a time and an early wrong digit costs a factor of ten; a linear read-out of the same
state has no such cliff and errs elsewhere. Measured on the dev data (3 epochs, last 500 items, AMD EPYC with
avx512_bf16): the read-out alone $41.13 MAE, the 8-beam mean $43.42; both go into the ensemble (ensemble.py): $40.94.

The fit reads every training row once (a forward pass, no generation; 4 min 16 s for 2,947 + 155 rows on an Intel
Xeon with AMX, 8 min on the EPYC), so `train` fits it at the end of a price run and `evaluate` reuses it (taking
the test prompts' features from its beam search's prefill). It is kept in <run>/readout.json with a digest of
the weights it was fitted on: weights trained further are refitted, never silently reused.
The ridge strength is the one of ALPHAS with the lowest 5-fold cross-validated MAE on the training rows. Picked
on the 155 validation rows of the dev run instead, the strengths' MAEs lay within $0.70 of each other ($31.35 to
$32.05, $35.11 for the strongest) and the pick moved between runs; the validation MAE is still recorded.
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

from .task import MAX_PRICE, MIN_PRICE, TASK

FILE = "readout.json"
ALPHAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)
DEFAULT_ALPHA = 1000.0  # with too few training rows to cross-validate: the middle of the range
FOLDS = 5
BATCH = 16  # prompts per forward pass: 256 dev prompts took 26 s at 16, 58 s at 64 (2-core AMX CPU)


@dataclasses.dataclass
class Readout:
    mean: list[float]  # per-feature standardisation, from the training rows
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    weights_digest: str  # sha256 of the weight files it was fitted on
    fitted_on: int
    valid_mae: dict = dataclasses.field(default_factory=dict)  # alpha -> MAE on the validation rows
    cv_mae: dict = dataclasses.field(default_factory=dict)  # alpha -> cross-validated MAE on the training rows

    def predict(self, features) -> list[float]:
        """One price per feature row, within the prices the task accepts."""
        import numpy as np

        return _prices(np.asarray(features, dtype=np.float64), np.asarray(self.mean), np.asarray(self.scale),
                       np.asarray(self.coef), self.intercept).tolist()


def _prices(x, mean, scale, coef, intercept):
    """The read-out's prices for feature rows x: standardised, linear in log1p(price), within the accepted prices."""
    import numpy as np

    return np.clip(np.expm1((x - mean) / scale @ coef + intercept), MIN_PRICE, MAX_PRICE)


def fit(train_x, train_prices: list[float], valid_x=None, valid_prices: list[float] | None = None,
        digest: str = "") -> Readout:
    """Ridge on standardised features -> log1p(price), with the alpha of the lowest cross-validated MAE on the
    training rows (DEFAULT_ALPHA with fewer than 2 rows per fold); the validation rows' MAE is recorded."""
    import numpy as np

    x = np.asarray(train_x, dtype=np.float64)
    if len(x) < 2:
        raise ConfigError(f"the read-out needs at least 2 training rows, got {len(x)}")
    prices = np.asarray(train_prices, dtype=np.float64)
    cv: dict[str, float] = {}
    if len(x) >= 2 * FOLDS:
        folds = np.array_split(np.random.default_rng(0).permutation(len(x)), FOLDS)
        errors = {a: 0.0 for a in ALPHAS}
        for held in folds:
            kept = np.setdiff1d(np.arange(len(x)), held)
            for a, guesses in zip(ALPHAS, _ridge(x[kept], prices[kept], ALPHAS).predict_each(x[held])):
                errors[a] += float(np.abs(guesses - prices[held]).sum())
        cv = {str(a): round(e / len(x), 4) for a, e in errors.items()}
    best = min(ALPHAS, key=lambda a: cv[str(a)]) if cv else DEFAULT_ALPHA
    paths = _ridge(x, prices, ALPHAS)
    scores: dict[str, float] = {}
    if valid_x is not None and len(valid_x):
        for a, guesses in zip(ALPHAS, paths.predict_each(np.asarray(valid_x, dtype=np.float64))):
            scores[str(a)] = round(float(np.abs(guesses - np.asarray(valid_prices)).mean()), 4)
    return Readout(paths.mean.tolist(), paths.scale.tolist(), paths.coef(ALPHAS.index(best)).tolist(),
                   paths.intercept, best, digest, len(x), scores, cv)


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

    def predict_each(self, x) -> list:
        """Per alpha, the prices for rows x, within the prices the task accepts."""
        return [_prices(x, self.mean, self.scale, self.coef(i), self.intercept) for i in range(len(self.shrunk))]


def _ridge(x, prices, alphas) -> _RidgePaths:
    """Ridge of log1p(price) on x standardised by its own mean and spread (the intercept unpenalised, as
    sklearn's Ridge), for every alpha at the cost of one SVD."""
    import numpy as np

    mean, scale = x.mean(0), x.std(0) + 1e-6
    y = np.log1p(prices)
    u, s, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    uty = u.T @ (y - y.mean())
    return _RidgePaths(mean, scale, vt, [s / (s * s + a) * uty for a in alphas], float(y.mean()))


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
    return None if fitted is None else fitted.predict(states(model, tokenizer, fmt, rows).numpy())


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
                 None if valid_x is None else valid_x.numpy(), [r["price"] for r in valid_rows], digest)
    if runs.is_main_process():
        tmp = run.weights_home / (FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(dataclasses.asdict(fitted)), encoding="utf-8")
            tmp.replace(run.weights_home / FILE)  # never a half-written file
        except OSError as e:  # a full disk, or a checkpoint the training rotated away: the command goes on
            log(f"could not keep the read-out in {run.weights_home} ({e.strerror or e}); it serves this command "
                "only and will be fitted again next time")
    said = [f"cross-validated MAE ${fitted.cv_mae[str(fitted.alpha)]:.2f}"] if fitted.cv_mae else []
    if fitted.valid_mae:
        said.append(f"validation MAE ${fitted.valid_mae[str(fitted.alpha)]:.2f} over {len(valid_rows)} rows")
    log(f"read-out: alpha {fitted.alpha:g}" + "".join(f", {x}" for x in said))
    return fitted


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
            return ", ".join(f"{float(a):g}: ${v:.2f}" for a, v in maes.items())

        print(f"read-out of {run.path}: alpha {fitted.alpha:g}, fitted on {fitted.fitted_on} training rows\n"
              f"  cross-validated MAE by alpha: {shown(fitted.cv_mae) or 'too few training rows'}\n"
              f"  validation MAE by alpha: {shown(fitted.valid_mae) or 'no validation rows'}\n"
              f"wrote {run.weights_home / FILE}")

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
