"""The price predictor's hidden-state read-out: the ridge fit and its choice of strength, and a saved read-out
that is reused only for the weights it was fitted on."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from apps.price_predictor import readout
from apps.price_predictor.task import TASK
from shared import runs
from shared.config import resolve
from shared.data import DataReport

from .conftest import write_jsonl


def _linear(n: int, seed: int):
    """Features and prices whose log1p is a linear function of them, plus a little noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    logs = 3.0 + x @ np.array([0.5, -0.3, 0.2, 0.0, 0.1, 0.0, -0.2, 0.4]) + rng.normal(scale=0.05, size=n)
    return x, np.expm1(logs).tolist()


def test_fit_recovers_a_linear_price_and_picks_the_strength_by_cross_validation():
    x, prices = _linear(300, 0)
    xv, valid = _linear(60, 1)
    fitted = readout.fit(x, prices, xv, valid, digest="abc")
    assert fitted.fitted_on == 300 and fitted.weights_digest == "abc"
    assert set(fitted.cv_mae) == set(fitted.valid_mae) == {str(a) for a in readout.ALPHAS}
    assert fitted.cv_mae[str(fitted.alpha)] == min(fitted.cv_mae.values())
    assert fitted.alpha == 10.0  # almost noiseless: the weakest ridge fits best
    guesses = fitted.predict(xv)
    assert np.mean(np.abs(np.log1p(guesses) - np.log1p(valid))) < 0.1
    assert fitted.predict(np.full((1, 8), 100.0)) == [999.49]  # never outside the prices the task accepts
    with pytest.raises(ValueError, match="at least 2"):
        readout.fit(x[:1], prices[:1])


def test_the_strength_follows_the_training_rows_not_a_few_validation_rows():
    """Noisy prices ask for a strong ridge; a handful of validation rows that happen to favour the weakest one
    (here: rows priced exactly by the noiseless line) no longer decide."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 40))
    line = 3.0 + x[:, :8] @ np.array([0.5, -0.3, 0.2, 0.0, 0.1, 0.0, -0.2, 0.4])
    prices = np.expm1(line + rng.normal(scale=1.0, size=400)).tolist()
    fitted = readout.fit(x, prices, x[:12], np.expm1(line[:12]).tolist())
    assert fitted.alpha > readout.ALPHAS[0] and fitted.cv_mae[str(fitted.alpha)] == min(fitted.cv_mae.values())
    assert min(fitted.valid_mae, key=fitted.valid_mae.get) != str(fitted.alpha)


def test_the_ridge_is_sklearns_ridge_on_standardised_features():
    from sklearn.linear_model import Ridge

    x, prices = _linear(120, 4)
    fitted = readout.fit(x, prices)
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    reference = Ridge(alpha=fitted.alpha).fit(z, np.log1p(prices))
    np.testing.assert_allclose(fitted.coef, reference.coef_, rtol=1e-6, atol=1e-9)
    assert fitted.intercept == pytest.approx(float(reference.intercept_))
    # too few rows to cross-validate: the default strength, no cross-validated scores
    few = readout.fit(x[:6], prices[:6])
    assert few.alpha == readout.DEFAULT_ALPHA and few.cv_mae == {}


def _items_priced_by_their_words(n: int, seed: int):
    """Features that carry half of the log price and texts whose material word carries the other half."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    materials = rng.integers(0, 3, size=n)
    logs = 3.0 + 0.4 * x[:, 0] - 0.3 * x[:, 1] + np.array([-0.8, 0.0, 0.8])[materials] + rng.normal(scale=0.05,
                                                                                                  size=n)
    words = np.array(["plastic", "steel", "silver"])[materials]
    texts = [f"Kettle model {i}\nA {w} kettle for the kitchen." for i, w in enumerate(words)]
    return x, np.expm1(logs).tolist(), texts


def test_the_text_block_is_sklearns_ridge_on_state_and_weighted_tfidf():
    """The Gram-matrix solution equals sklearn's Ridge on [standardised state, weight x TF-IDF] for every
    strength, and its primal form (what readout.json keeps) predicts what the dual form does."""
    from scipy import sparse
    from sklearn.linear_model import Ridge

    from apps.price_predictor.baselines import text_vectorizer

    x, prices, texts = _items_priced_by_their_words(80, 5)
    xh, _, texts_h = _items_priced_by_their_words(20, 6)
    vectorizer = text_vectorizer(len(texts)).fit(texts)
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    zh = (xh - x.mean(0)) / (x.std(0) + 1e-6)
    paths = readout._TextRidgePaths(x, prices, readout._Text(texts), 30.0)
    for i in (0, 4, 8):
        design = sparse.hstack([sparse.csr_matrix(z), 30.0 * vectorizer.transform(texts)]).tocsr()
        reference = Ridge(alpha=readout.ALPHAS[i], solver="lsqr", tol=1e-10).fit(design, np.log1p(prices))
        held = sparse.hstack([sparse.csr_matrix(zh), 30.0 * vectorizer.transform(texts_h)]).tocsr()
        expected = np.clip(np.expm1(reference.predict(held)), 0.5, 999.49)
        np.testing.assert_allclose(paths.predict_each(xh, texts_h)[i], expected, rtol=1e-5)
        coef, intercept, block = paths.solution(i)
        saved = readout.Readout(paths.mean.tolist(), paths.scale.tolist(), coef.tolist(), intercept,
                                readout.ALPHAS[i], "d", 80, text_weight=30.0, text=block)
        np.testing.assert_allclose(saved.predict(xh, texts_h), expected, rtol=1e-4)


def test_fit_takes_the_text_in_when_the_words_carry_the_price():
    x, prices, texts = _items_priced_by_their_words(200, 7)
    xv, valid, texts_v = _items_priced_by_their_words(60, 8)
    fitted = readout.fit(x, prices, xv, valid, digest="abc", train_texts=texts, valid_texts=texts_v)
    assert fitted.text_weight > 0 and fitted.text
    best = min(fitted.cv_mae, key=fitted.cv_mae.get)
    assert best == f"{fitted.alpha}, text {fitted.text_weight:g}" and str(fitted.alpha) in fitted.cv_mae
    alone = min(v for k, v in fitted.cv_mae.items() if "text" not in k)
    assert fitted.cv_mae[best] < alone / 2  # the state alone misses the material's half of the price
    guesses = fitted.predict(xv, texts_v)
    assert np.mean(np.abs(np.log1p(guesses) - np.log1p(valid))) < 0.1
    # readout.json round trip: the same prices from the saved vocabulary, idf and coefficients
    again = readout.Readout(**json.loads(json.dumps(dataclasses.asdict(fitted))))
    np.testing.assert_allclose(again.predict(xv, texts_v), guesses, rtol=1e-4)
    with pytest.raises(ValueError, match="text too"):
        fitted.predict(xv)
    # without texts (or too few rows to cross-validate) the read-out is the state alone, as before
    plain = readout.fit(x, prices, train_texts=None)
    assert plain.text is None and plain.text_weight == 0 and all("text" not in k for k in plain.cv_mae)
    few = readout.fit(x[:6], prices[:6], train_texts=texts[:6])
    assert few.text is None and few.predict(xv[:2]) == few.predict(xv[:2], texts_v[:2])
    # texts with no word to count (TF-IDF keeps words of 2+ letters): the state alone, not a failed run
    wordless = readout.fit(x, prices, train_texts=["x"] * len(x))
    assert wordless.text is None and wordless.cv_mae == plain.cv_mae


@pytest.fixture()
def run(tmp_path):
    items = [{"title": f"kettle {i}", "description": "A kettle.", "price": 10.0 + i} for i in range(30)]
    flat = {"data.train": str(write_jsonl(tmp_path / "train.jsonl", items)), "data.valid_fraction": 0.2}
    made = runs.Run.create(tmp_path / "run", "price_predictor", dataclasses.asdict(resolve(cli=flat)), {},
                           status="completed")
    made.save()
    (made.path / "adapter").mkdir()
    (made.path / "adapter" / "adapter_config.json").write_text("{}")
    (made.path / "adapter" / "adapter_model.safetensors").write_bytes(b"weights v1")
    return made


def test_a_saved_read_out_is_reused_only_for_the_weights_it_was_fitted_on(run, monkeypatch):
    read = []

    def states(model, tokenizer, fmt, rows, progress=None):  # a feature per row that encodes its price
        read.append(len(rows))
        return torch.tensor([[np.log1p(r["price"]), 1.0] for r in rows], dtype=torch.float32)

    monkeypatch.setattr(readout, "states", states)
    rows = TASK.read(str(run.path.parent / "train.jsonl"), DataReport())
    train_rows, valid_rows = rows[:24], rows[24:]
    first = readout.prepare(run, None, None, None, train_rows, valid_rows)
    assert read == [24, 6] and (run.path / readout.FILE).is_file()
    assert first.predict([[np.log1p(20.0), 1.0]], ["kettle 10\nA kettle."])[0] == pytest.approx(20.0, rel=0.05)
    assert readout.prepare(run, None, None, None, train_rows, valid_rows) == first and read == [24, 6]
    # weights trained further: refitted, not reused
    (run.path / "adapter" / "adapter_model.safetensors").write_bytes(b"weights v2, trained further")
    assert readout.load(run) is None
    readout.prepare(run, None, None, None, train_rows, valid_rows)
    assert read == [24, 6, 24, 6]
    saved = json.loads((run.path / readout.FILE).read_text())
    assert saved["weights_digest"] == readout.weights_digest(run) and saved["fitted_on"] == 24
    # a damaged file is refitted too, never a crash
    (run.path / readout.FILE).write_text("{not json")
    assert readout.load(run) is None


def test_a_checkpoints_read_out_is_kept_with_the_checkpoint(run, monkeypatch):
    """Scoring a checkpoint fits a read-out for its weights and keeps it in its folder: the run's own
    read-out (fitted on the final weights) is neither used for it nor replaced."""
    monkeypatch.setattr(readout, "states", lambda model, tokenizer, fmt, rows, progress=None:
                        torch.tensor([[np.log1p(r["price"]), 1.0] for r in rows], dtype=torch.float32))
    rows = TASK.read(str(run.path.parent / "train.jsonl"), DataReport())
    readout.prepare(run, None, None, None, rows[:24], rows[24:])
    final = (run.path / readout.FILE).read_bytes()
    folder = run.checkpoints_dir / "checkpoint-10"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights at step 10")
    (folder / "trainer_state.json").write_text("{}")  # the Trainer writes it last
    at_ten = run.at_checkpoint(10)
    assert readout.load(at_ten) is None  # the final weights' read-out does not fit these
    fitted = readout.prepare(at_ten, None, None, None, rows[:24], rows[24:])
    assert json.loads((folder / readout.FILE).read_text())["weights_digest"] == fitted.weights_digest
    assert (run.path / readout.FILE).read_bytes() == final
    assert readout.load(at_ten) == fitted and readout.load(run).weights_digest != fitted.weights_digest


def test_a_read_out_that_cannot_be_kept_still_serves_the_command(run, monkeypatch):
    """The checkpoint being scored is rotated away by the training while the read-out is fitted: the fit is
    used, nothing is lost, and no half file is left."""
    import shutil

    folder = run.checkpoints_dir / "checkpoint-10"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights at step 10")
    (folder / "trainer_state.json").write_text("{}")
    at_ten = run.at_checkpoint(10)

    def states(model, tokenizer, fmt, rows, progress=None):
        shutil.rmtree(folder, ignore_errors=True)  # the training's rotation, mid-fit
        return torch.tensor([[np.log1p(r["price"]), 1.0] for r in rows], dtype=torch.float32)

    monkeypatch.setattr(readout, "states", states)
    rows = TASK.read(str(run.path.parent / "train.jsonl"), DataReport())
    fitted = readout.prepare(at_ten, None, None, None, rows[:24], rows[24:])
    assert fitted.predict([[np.log1p(20.0), 1.0]])[0] == pytest.approx(20.0, rel=0.05)
    assert fitted.weights_digest != readout.weights_digest(at_ten)  # the digest of the weights as they were read
    assert not folder.exists() and not (run.path / readout.FILE).exists()
