import json

import pytest
import torch

from apps.price_predictor.task import (
    TASK,
    completion_text,
    is_hit,
    item_row,
    mean_price,
    parse_price,
    price_metrics,
    prompt_text,
)
from shared.chat import get_format
from shared.config import ConfigError
from shared.data import DataReport, Row
from shared.train import build_dataset, prefix_is_stable, tokenize_pair

ROW = Row({"title": "Steel Kettle, 1.7 L", "description": "Boils fast.", "price": 23.6}, "x", 1)


def test_prompt_and_completion_follow_the_course():
    assert prompt_text("T", "D") == "How much does this cost to the nearest dollar?\n\nT\nD\n\nPrice is $"
    assert completion_text(23.6) == "24.00" and completion_text(0.5) == "1.00" and completion_text(999.49) == "999.00"
    fmt = get_format("gemma")
    prompt, completion = TASK.prompt_completion(ROW, fmt)
    assert prompt == "<bos>" + prompt_text("Steel Kettle, 1.7 L", "Boils fast.")
    assert completion == "24.00<end_of_turn>" and TASK.inference_prompt(ROW, fmt) == prompt


@pytest.mark.parametrize("answer, price", [
    ("1,299.99", 1299.99), ("$12", 12.0), ("12.", 12.0), ("about 40", 40.0), ("", None), ("abc", None),
    ("24.00 and", 24.0), ("24.00<end_of_turn>", 24.0), (" 7.5 dollars", 7.5), ("Price: 3,000", 3000.0),
])
def test_parse_price(answer, price):
    assert parse_price(answer) == price


def test_metrics_on_known_values():
    m = price_metrics([100.0, 10.0, 200.0, 50.0], [110.0, 60.0, None, 50.0])
    assert m["mae"] == pytest.approx((10 + 50 + 200 + 0) / 4)
    assert m["hit_rate"] == 0.5 and m["unparsed"] == 1 and m["n"] == 4
    cheap = price_metrics([30.0, 20.0], [None, None])  # $0 is within $40 of both: still not a hit
    assert cheap["hit_rate"] == 0.0 and cheap["mae"] == 25.0
    import math
    expected = math.sqrt(((math.log1p(110) - math.log1p(100)) ** 2 + (math.log1p(60) - math.log1p(10)) ** 2
                          + (math.log1p(0) - math.log1p(200)) ** 2) / 4)
    assert m["rmsle"] == round(expected, 4)
    assert is_hit(500, 590) and not is_hit(500, 601) and is_hit(30, 69) and not is_hit(30, 71)


def test_bad_prices_are_dropped_and_counted(tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"title": "A", "description": "d", "price": 10}, {"title": "B", "description": "d", "price": -3},
            {"title": "C", "description": "d", "price": 0}, {"title": "D", "description": "d", "price": "abc"},
            {"title": "E", "description": "d", "price": "NaN"}, {"title": "F", "description": "d", "price": 5000},
            {"title": "G", "description": "d"}, {"title": "H", "description": "d", "price": "$1,299.99"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = DataReport()
    kept = TASK.read(str(path), report)
    assert [r["title"] for r in kept] == ["A"]
    assert report.dropped == {"price out of range [0.5, 999.49]": 4, "price: expected a number": 1,
                              "price: expected a finite number": 1, "price: is missing": 1}


def test_mask_is_exactly_the_price_on_the_tiny_model(tiny_model_cfg):
    from shared.models import load

    _, tokenizer, fmt = load(tiny_model_cfg)
    ds = build_dataset([ROW], TASK, tokenizer, fmt, 256, DataReport())
    ids, mask = ds[0]["input_ids"], ds[0]["completion_mask"]
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "24.00" + fmt.end_of_text
    assert tokenizer.decode([t for t, m in zip(ids, mask) if not m]).endswith("Price is $")


def test_training_refuses_a_tokenizer_that_merges_across_the_dollar(tiny_model_cfg):
    from shared.models import load

    _, tokenizer, fmt = load(tiny_model_cfg)

    class MergingTokenizer:  # merges "$2" into one token, as some BPE vocabularies do
        name_or_path = "merging"

        def __call__(self, text, add_special_tokens=False):
            out = tokenizer(text.replace("$2", "\x00"), add_special_tokens=False)["input_ids"]
            return {"input_ids": [999 if t == tokenizer.convert_tokens_to_ids("Ā") else t for t in out]}

    merging = MergingTokenizer()
    assert not prefix_is_stable(merging, "Price is $", "24.00")
    with pytest.raises(ConfigError, match="merges the end of the prompt"):
        build_dataset([ROW], TASK, merging, fmt, 256, DataReport())


@pytest.mark.slow
def test_prefix_is_stable_on_the_shipped_gemma_tokenizer(gemma_tokenizer):
    fmt = get_format("gemma")
    for price in (0.5, 9.99, 24.0, 99.5, 100.0, 149.99, 999.49):
        row = Row({"title": "Item", "description": "Nice item.", "price": price}, "x", 1)
        prompt, completion = TASK.prompt_completion(row, fmt)
        assert prefix_is_stable(gemma_tokenizer, prompt, completion), price
        ids, mask = tokenize_pair(gemma_tokenizer, prompt, completion)
        answer = [t for t, m in zip(ids, mask) if m]
        assert gemma_tokenizer.decode(answer) == completion_text(price) + "<end_of_turn>"


def test_item_row_for_inference():
    fmt = get_format("chatml")
    assert TASK.inference_prompt(item_row(" Lamp ", " Bright. "), fmt).endswith("Lamp\nBright.\n\nPrice is $")


def test_median_price_weighs_the_candidates():
    from math import log

    from apps.price_predictor.task import median_price

    # 40% on 20, 35% on 30, 25% on 90: the median is 30 (greedy would say 20; the mean, 42, is pulled by the tail)
    cands = [("20.00", log(0.40)), ("30.00", log(0.35)), ("90.00", log(0.25))]
    assert median_price(cands) == 30.0
    assert median_price([("abc", 0.0), ("15.00", -5.0)]) == 15.0  # unparsed answers carry no vote
    assert median_price([("", 0.0)]) is None and median_price([]) is None


# ---------------------------------------------------------------- prices written as text in data files

@pytest.mark.parametrize("text, price", [
    ("24", 24.0), ("24.99", 24.99), ("$1,299.99", 1299.99), ("1,299", 1299.0), ("9,99", 9.99), ("€9,99", 9.99),
    ("9,99 €", 9.99), ("1299,00", 1299.0), ("USD 12", 12.0), ("US$ 7.50", 7.5), ("-3", -3.0),
])
def test_price_from_text(text, price):
    from apps.price_predictor.curation import price_from_text

    assert price_from_text(text) == price


@pytest.mark.parametrize("text", ["1.299,99", "12,5", "1,2345", "9,999,99", "1,29,9"])
def test_price_from_text_refuses_an_ambiguous_comma(text):
    from apps.price_predictor.curation import AmbiguousPrice, price_from_text

    with pytest.raises(AmbiguousPrice, match="is ambiguous"):
        price_from_text(text)


def test_a_european_decimal_is_not_read_as_hundreds(tmp_path):
    """Read as thousands, "9,99" would be 999.00: a 100x wrong label the range check could not catch."""
    path = tmp_path / "items.csv"
    path.write_text('title,description,price\nLamp,Bright.,"9,99"\nKettle,Steel.,"$1,299.00"\nMug,Big.,"4,50"\n')
    report = DataReport()
    kept = TASK.read(str(path), report)
    assert [(r["title"], r["price"]) for r in kept] == [("Lamp", 9.99), ("Mug", 4.5)]
    assert report.dropped == {"price out of range [0.5, 999.49]": 1}


def test_curation_reads_prices_by_the_same_rule():
    from apps.price_predictor.curation import REASON_AMBIGUOUS, price_from_value

    assert price_from_value("9,99") == (9.99, None) and price_from_value("$1,299.99") == (1299.99, None)
    assert price_from_value("1.299,99") == (None, REASON_AMBIGUOUS)


def test_amazon_and_plain_files_count_rows_alike(tmp_path):
    """Both readers take `limit`/`last` as rows of the file and count every row read as kept or dropped."""
    from .conftest import ROOT

    plain = tmp_path / "items.jsonl"
    plain.write_text("".join(json.dumps({"title": t, "description": "d", "price": p}) + "\n"
                             for t, p in [("A", 10), ("B", -3), ("C", 20), ("D", 5000), ("E", 30)]))
    amazon = ROOT / "tests" / "fixtures" / "amazon_meta_sample.jsonl"
    for source, n_rows in ((str(plain), 5), (str(amazon), 12)):
        for kwargs, n_read in (({}, n_rows), ({"limit": 3}, 3), ({"last": 3}, 3)):
            report = DataReport()
            rows = TASK.read(source, report, **kwargs)
            assert report.rows_read == n_read == len(rows) + sum(report.dropped.values()), (source, kwargs)
            assert report.files == [source]


# ---------------------------------------------------------------- the ensemble: fine-tuned model + TF-IDF ridge

def _synthetic(n: int, intercept: float, w_llm: float, w_ridge: float, seed: int = 0):
    """(llm, ridge, truth) where log1p(truth) is exactly the blend of the two estimates' log1p."""
    import math
    import random

    rng = random.Random(seed)
    llm = [math.expm1(rng.uniform(1, 6)) for _ in range(n)]
    ridge = [math.expm1(rng.uniform(1, 6)) for _ in range(n)]
    truth = [math.expm1(intercept + w_llm * math.log1p(a) + w_ridge * math.log1p(b)) for a, b in zip(llm, ridge)]
    return llm, ridge, truth


def test_ensemble_recovers_the_weights_and_keeps_them_non_negative():
    from apps.price_predictor import ensemble

    llm, ridge, truth = _synthetic(60, 0.3, 0.6, 0.35)
    fitted = ensemble.fit({"llm": llm, "ridge": ridge}, truth)
    assert (fitted.intercept, fitted.weights["llm"], fitted.weights["ridge"]) == pytest.approx((0.3, 0.6, 0.35),
                                                                                               abs=1e-4)
    assert fitted.fitted_on == 60
    assert fitted.predict({"llm": llm[:5], "ridge": ridge[:5]}) == pytest.approx(truth[:5], rel=1e-3)
    # a ridge estimate that only hurts gets weight 0, not a negative one
    llm, ridge, truth = _synthetic(60, 0.0, 1.0, -0.3, seed=1)
    assert ensemble.fit({"llm": llm, "ridge": ridge}, truth).weights["ridge"] == 0.0
    # a third member that carries nothing new gets (near) zero weight; the blend needs the ridge as its fallback
    llm, ridge, truth = _synthetic(60, 0.3, 0.6, 0.35, seed=2)
    fitted = ensemble.fit({"llm": llm, "readout": [50.0] * 60, "ridge": ridge}, truth)
    assert list(fitted.weights) == ["llm", "readout", "ridge"] and fitted.weights["llm"] == pytest.approx(0.6, abs=1e-3)
    assert fitted.summary() == {"intercept": fitted.intercept, **fitted.weights, "fitted_on": 60}
    with pytest.raises(ValueError, match="'ridge' member"):
        ensemble.fit({"llm": llm, "readout": ridge}, truth)


def test_ensemble_falls_back_to_the_ridge_estimate_without_an_llm_price():
    from apps.price_predictor import ensemble

    llm, ridge, truth = _synthetic(30, 0.1, 0.7, 0.3)
    with_gaps = [None if i % 3 == 0 else x for i, x in enumerate(llm)]
    fitted = ensemble.fit({"llm": with_gaps, "ridge": ridge}, truth)  # unparsed answers are left out of the fit
    assert fitted.fitted_on == 20 and fitted.weights["llm"] == pytest.approx(0.7, abs=1e-4)
    assert fitted.predict({"llm": [None, 50.0], "ridge": [42.5, 50.0]})[0] == 42.5
    assert fitted.predict({"llm": [1e9], "ridge": [1e9]}) == [999.49]  # never outside the prices the task accepts
    with pytest.raises(ValueError, match="at least 10"):
        ensemble.fit({"llm": [None] * 30, "ridge": ridge}, truth)


def test_ensemble_choice_keeps_a_member_alone_when_no_blend_pays_under_leave_one_out():
    """A member as it is competes with the fitted blends: fitting weights on the items scored would flatter the
    blend, leave-one-out does not, and a blend of pure noise must lose to the good member alone."""
    import math
    import random

    from apps.price_predictor import ensemble

    rng = random.Random(3)
    truth = [math.expm1(rng.uniform(1, 6)) for _ in range(40)]
    readout = [t * math.exp(0.1 if i % 2 else -0.1) for i, t in enumerate(truth)]  # unbiased, 10% off either way
    noise = [math.expm1(rng.uniform(1, 6)) for _ in truth]  # carries nothing
    chosen, scores = ensemble.choose({"llm": noise, "readout": readout, "ridge": noise[::-1]}, truth)
    assert chosen.name == "alone: read-out" and chosen.fitted_numbers == 0
    assert chosen.blend.summary() == {"intercept": 0.0, "readout": 1.0, "fitted_on": 40}
    # an unparsed LLM answer takes nothing from an ensemble without the LLM
    assert chosen.blend.predict({"llm": [None, 5.0], "readout": [80.0, 70.0], "ridge": [9.0, 9.0]}) == \
        pytest.approx([80.0, 70.0])
    assert scores["alone: read-out"] == pytest.approx(sum(abs(r - t) for r, t in zip(readout, truth)) / 40, abs=1e-3)
    assert len(scores) == 3 + 7  # each member alone, the blend of each non-empty subset
    assert ensemble.name(list(chosen.blend.weights), chosen.name) == "ensemble: read-out alone"


def test_ensemble_choice_takes_the_blend_where_the_members_err_in_different_places():
    import random

    from apps.price_predictor import ensemble

    llm, ridge, truth = _synthetic(60, 0.2, 0.5, 0.5, seed=4)  # the truth is exactly half one, half the other
    rng = random.Random(5)
    readout = [t * rng.uniform(0.5, 2.0) for t in truth]
    chosen, scores = ensemble.choose({"llm": llm, "readout": readout, "ridge": ridge}, truth)
    assert chosen.name == "fitted: fine-tuned + TF-IDF ridge"
    assert chosen.blend.weights == pytest.approx({"llm": 0.5, "ridge": 0.5}, abs=1e-3)
    assert scores[chosen.name] < 0.01 < min(v for k, v in scores.items() if k.startswith("alone"))
    # the blend of all three is as good (the read-out's weight 0): the tie goes to the blend with fewer weights
    assert scores["fitted: fine-tuned + read-out + TF-IDF ridge"] == scores[chosen.name]
    assert ensemble.name(list(chosen.blend.weights), chosen.name) == "ensemble: fine-tuned + TF-IDF ridge"
    # a member that is right up to a constant factor is rescaled, not blended with anything
    chosen, _ = ensemble.choose({"llm": [1.1 * t for t in truth], "readout": readout, "ridge": ridge}, truth)
    assert list(chosen.blend.weights) == ["llm"]
    assert ensemble.name(["llm"], chosen.name) == "ensemble: fine-tuned, rescaled"


@pytest.mark.parametrize("beams", [0, 8])
def test_evaluate_fits_the_ensemble_on_the_validation_rows(tmp_path, monkeypatch, capsys, beams):
    """The evaluate wiring with a stand-in for the model: validation rows are read and the ridge fitted before any
    generation; the members' estimates on the validation rows choose the ensemble; the test rows are scored with it
    (an unparsed answer taking the ridge estimate), written to metrics.json and named in the demo's table."""
    import dataclasses
    import math
    import random

    from apps.price_predictor import evaluate as price_eval
    from apps.price_predictor.report import metric_rows
    from shared import evaluation, runs
    from shared.config import resolve

    from .conftest import write_jsonl

    rng = random.Random(0)
    sizes = {"small": 15.0, "medium": 60.0, "large": 240.0}

    def items(name, n):
        out = []
        for i in range(n):
            size, kind = rng.choice(list(sizes)), rng.choice(["kettle", "lamp", "chair"])
            out.append({"title": f"{size} {kind} {name} {i}", "description": f"A {size} {kind}.",
                        "price": round(sizes[size] * rng.uniform(0.8, 1.25), 2)})
        return out

    files = {name: write_jsonl(tmp_path / f"{name}.jsonl", items(name, n))
             for name, n in (("train", 60), ("valid", 24), ("test", 12))}
    flat = {"data.train": str(files["train"]), "data.valid": str(files["valid"]), "data.test": str(files["test"])}
    run = runs.Run.create(tmp_path / "run", "price_predictor", dataclasses.asdict(resolve(cli=flat)), {},
                          status="completed")
    run.save()
    (run.path / "adapter").mkdir()
    (run.path / "adapter" / "adapter_config.json").write_text("{}")
    prices = {}  # prompt -> (true price, unparsed): the stand-in answers 10% high, and nothing for item 3
    for name in files:
        for r in TASK.read(str(files[name]), DataReport(), drop_duplicates=False):
            prices[TASK.inference_prompt(r, get_format("chatml"))] = (r["price"], r["title"].endswith(" 3"))
    order = []
    real_ridge = price_eval.fit_text_ridge
    monkeypatch.setattr(price_eval, "fit_text_ridge", lambda rows: order.append("ridge") or real_ridge(rows))

    def answer(prompt, factor=1.1):
        price, unparsed = prices[prompt]
        return "n/a" if unparsed else f"{price * factor:.2f}"

    def generate(model, tokenizer, fmt, prompts, gen, budgets=None, progress=None):
        order.append(f"generate {len(prompts)}")
        return [answer(p) for p in prompts]

    def candidates(model, tokenizer, fmt, prompts, n, max_new_tokens, batch_size=8, progress=None, ends=(),
                   states=None):
        order.append(f"search {len(prompts)}")
        if states is not None:  # the prefill's features, for the read-out
            states[:] = torch.tensor([[prices[p][0]] for p in prompts])
        # a likely answer and an unlikely one at twice the price: the weighted mean and median differ
        return [[(answer(p), -0.1), (answer(p, 2.2), -3.0)] for p in prompts]

    fitted_on = []
    real_choose = price_eval.blend.choose
    monkeypatch.setattr(price_eval.blend, "choose", lambda members, truth: fitted_on.extend(members["llm"])
                        or real_choose(members, truth))

    def predict_both(task, plan, with_base=True, extra=None, **overrides):
        fmt = get_format("chatml")
        prompts = [task.inference_prompt(r, fmt) for r in plan.rows]
        tuned = generate(None, None, fmt, prompts, None)
        return evaluation.Predictions(plan.run, plan.source, plan.rows, tuned, None, {}, {}, plan.cfg,
                                      extra=extra(None, None, fmt, prompts))

    def readout(run_, model, tokenizer, fmt, train_rows, run_valid_rows, rows, valid_rows, test_x, valid_x):
        order.append(f"readout {len(train_rows)}/{len(run_valid_rows)}")  # fitted on the run's own splits
        prompts = [TASK.inference_prompt(r, fmt) for r in rows]
        if beams:  # the features come from the searches' prefills, not from another pass
            assert test_x[:, 0].tolist() == pytest.approx([prices[p][0] for p in prompts])
            assert valid_x.shape == (len(valid_rows), 1) and not valid_x.isnan().any()
        else:
            assert test_x is None and valid_x is None
        noisy = random.Random(1)  # a read-out off by up to 60% either way: it must not outweigh the exact LLM
        guess = [prices[p][0] * noisy.uniform(0.6, 1.6) for p in prompts]
        valid = [prices[TASK.inference_prompt(r, fmt)][0] * noisy.uniform(0.6, 1.6) for r in valid_rows]
        return guess, valid or None

    monkeypatch.setattr(price_eval, "_readout", readout)
    monkeypatch.setattr(price_eval.head, "empty_states", lambda model, n: torch.full((n, 1), float("nan")))
    monkeypatch.setattr(price_eval, "generate", generate)
    monkeypatch.setattr(price_eval, "candidates", candidates)
    monkeypatch.setattr(price_eval.evaluation, "predict_both", predict_both)
    metrics = price_eval.evaluate(str(run.path), with_base=False, beams=beams)
    # the ridge is fitted before any generation; the validation rows go through the estimator the blend uses
    searched = ["search 12", "search 24"] if beams else ["generate 24"]
    assert order == ["ridge", "generate 12", *searched, "readout 60/24"]
    ens = metrics["ensemble"]
    if beams:  # the blend is fitted on the weighted mean of the validation candidates, as it is applied on the test
        first = next(iter(TASK.read(str(files["valid"]), DataReport(), drop_duplicates=False)))
        assert fitted_on[0] == pytest.approx(mean_price([(f"{first['price'] * 1.1:.2f}", -0.1),
                                                         (f"{first['price'] * 2.2:.2f}", -3.0)]))
    assert ens["n"] == 12 and ens["unparsed"] == 0 and ens["llm"] == ("mean of 8 beams" if beams else "greedy")
    assert ens["weights"]["fitted_on"] == 23  # item 3 of the validation rows gave no price
    # the stand-in is always 10% high: the ensemble rescales it alone, which removes the bias
    assert ens["offered"] == ["llm", "readout", "ridge"] and ens["members"] == ["llm"]
    assert ens["chosen"] == "fitted: fine-tuned" and len(ens["validation_mae"]) == 10
    assert ens["weights"]["llm"] == pytest.approx(1.0, abs=0.02)
    assert ens["validation_mae"]["fitted: fine-tuned"] < ens["validation_mae"]["alone: fine-tuned"]
    assert metrics["readout"]["n"] == 12
    assert ens["mae"] < metrics["finetuned"]["mae"]
    name = "test" if beams == price_eval.BEAMS else f"test-beams{beams}"  # beside the default's, not instead
    saved = json.loads((run.path / "eval" / name / "metrics.json").read_text())
    shown = list(metric_rows(saved))
    assert shown[-2:] == ["fine-tuned, hidden-state read-out", "ensemble: fine-tuned, rescaled"]
    assert ("fine-tuned, 8-beam mean" in shown) == bool(beams)
    rows = [json.loads(line) for line in (run.path / "eval" / name / "predictions.jsonl").read_text().splitlines()]
    fallback = [r for r in rows if r["finetuned"] is None]
    assert len(fallback) == 1 and fallback[0]["ensemble"] == fallback[0]["ridge"]
    assert all(r["readout"] > 0 for r in rows)
    assert ens["ridge_fallbacks"] == 1 and math.isfinite(ens["mae"])
    # the candidates again from the files evaluate wrote, without the model: the same choice and the same test MAE
    from apps.price_predictor import ensemble
    from shared.config import ConfigError

    scored = ensemble.compare(runs.Run.load(run.path), name)
    chosen = ensemble.best([c for c, _ in scored])
    assert chosen.name == ens["chosen"] and len(scored) == 10
    assert next(mae for c, mae in scored if c is chosen) == pytest.approx(ens["mae"], abs=0.01)
    assert {c.name: c.validation_mae for c, _ in scored} == ens["validation_mae"]
    ensemble.main(["--run", str(run.path), "--eval", name])
    marked = [line for line in capsys.readouterr().out.splitlines() if "<- the ensemble" in line]
    assert len(marked) == 1 and marked[0].split()[:2] == chosen.name.split()[:2]
    saved = run.path / "eval" / name / ensemble.VALIDATION_FILE
    lines = saved.read_text().splitlines()
    saved.write_text("\n".join([lines[0], lines[1].replace('"readout"', '"read"'), *lines[2:]]) + "\n")
    with pytest.raises(ConfigError, match=r"ensemble_validation.jsonl, line 2: field 'readout'"):
        ensemble.compare(runs.Run.load(run.path), name)


def test_mean_price_weighs_the_candidates():
    from math import log

    cands = [("20.", log(0.40)), ("30.", log(0.35)), ("90.", log(0.25)), ("n/a", 0.0)]
    assert mean_price(cands) == pytest.approx(0.40 * 20 + 0.35 * 30 + 0.25 * 90)  # unparsed answers carry no vote
    assert mean_price([("abc", 0.0)]) is None and mean_price([]) is None


@pytest.mark.parametrize("rows, message", [
    ([{"title": "Kettle", "description": "Steel.", "price": 30}], "at least 2 training items"),
    ([{"title": "Kettle", "description": "Steel.", "price": -1}] * 3, "at least 2 training items"),
])
def test_baselines_on_too_little_data_are_one_line(tmp_path, capsys, rows, message):
    from apps.price_predictor import baselines

    from .conftest import write_jsonl

    data = write_jsonl(tmp_path / "items.jsonl", rows)
    with pytest.raises(SystemExit) as e:
        baselines.main(["--data", str(data), "--test", str(data)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and message in err.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        baselines.main(["--data", str(data), "--holdout-last", "5"])
    assert "--holdout-last 5" in capsys.readouterr().err


def test_baselines_never_write_their_results_over_an_input(tmp_path, capsys, monkeypatch):
    from apps.price_predictor import baselines

    from .conftest import write_jsonl

    monkeypatch.chdir(tmp_path)

    data = write_jsonl(tmp_path / "items.jsonl", [{"title": f"Kettle {i}", "description": "Steel.", "price": 10 + i}
                                                  for i in range(12)])
    before = data.read_bytes()
    (tmp_path / "out").mkdir()
    for argv in (["--json", str(data)], ["--json", "./items.jsonl"], ["--json", str(tmp_path / "no" / "r.json")],
                 ["--json", "out"]):
        with pytest.raises(SystemExit) as e:
            baselines.main(["--data", str(data), "--holdout-last", "4", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err and err.startswith("error: --json"), err
    assert data.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl", "out"]
    baselines.main(["--data", str(data), "--holdout-last", "4", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())
    assert "test rows are also training rows" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --test would be ignored
        baselines.main(["--data", str(data), "--holdout-last", "4", "--test", str(data)])
    assert "cannot be combined" in capsys.readouterr().err
    # repeated rows in the file: the holdout shares them with the training rows, which is said
    leaky = write_jsonl(tmp_path / "leaky.jsonl", [json.loads(line) for line in data.read_text().splitlines()] * 2)
    baselines.main(["--data", str(leaky), "--holdout-last", "4"])
    assert "4 of the 4 test rows are also training rows" in capsys.readouterr().err


def test_a_price_run_with_fewer_than_two_training_rows_is_refused_before_loading(tmp_path, capsys):
    """The read-out (fitted after training) and the text baseline need two prices: refused before the model
    loads, not after minutes of training."""
    from shared.cli import train_main

    from .conftest import write_jsonl

    data = write_jsonl(tmp_path / "one.jsonl", [{"title": "Kettle", "description": "Steel.", "price": 30}])
    with pytest.raises(SystemExit) as e:
        train_main(TASK, ["--data", str(data), "--data.valid", str(data), "--model", str(tmp_path / "no-model"),
                          "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "needs at least 2" in err and str(data) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_rows_evaluate_cannot_score_are_counted_not_hidden(tmp_path, capsys):
    import dataclasses

    from shared import evaluation, runs
    from shared.config import resolve

    train = tmp_path / "train.csv"
    train.write_text("title,description,price\nKettle,Steel.,24.99\nLamp,Desk.,12.00\n")
    run = runs.Run.create(tmp_path / "run", "price_predictor",
                          dataclasses.asdict(resolve(cli={"data.train": str(train)})), {}, status="completed")
    run.save()
    (run.path / "adapter").mkdir()
    (run.path / "adapter" / "adapter_config.json").write_text("{}")
    mine = tmp_path / "mine.csv"
    mine.write_text("title,description,price\nKettle,Steel.,$24.99\nLamp,Desk.,N/A\nMug,Blue.,$7.50\n"
                    "Rug,Wool.,-5\nDrill,Cordless.,\"$1,299.00\"\n")
    plan = evaluation.plan(TASK, str(run.path), data=str(mine))
    err = capsys.readouterr().err
    assert len(plan.rows) + int(err.split(" rows not scored")[0].rsplit(" ", 1)[-1]) == 5, err
    assert f"{mine}: " in err and "rows not scored (" in err
    assert f"{mine}: 1 of the 2 rows to score are also in the run's training data ({train})" in err  # the kettle
