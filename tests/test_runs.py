"""The run folder belongs to the project: where runs live, what counts as a run, what training may replace,
evaluations kept side by side, and a damaged run.json read as one line naming the file."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import torch

from apps.translator.task import TASK
from shared import evaluation, runs
from shared.cli import train_main
from shared.config import ConfigError

from .conftest import PAIRS, write_jsonl
from .test_faults import cli_args, cli_error


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_jsonl(folder / "other.jsonl", [{"en": e, "ko": k} for e, k in PAIRS[:3]])
    return write_jsonl(folder / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS * 4])


@pytest.fixture(scope="module")
def finished(tiny_model_dir, data, tmp_path_factory) -> Path:
    """A finished 2-step run under a custom runs root, trained through the command line."""
    root = tmp_path_factory.mktemp("custom-root")
    train_main(TASK, cli_args(tiny_model_dir, data, root / "translator" / "mine", 2, "--data.test", str(data),
                              "--runs-root", str(root)))
    return root / "translator" / "mine"


# ---------------------------------------------------------------- where runs live

def test_one_place_decides_the_runs_root(monkeypatch, tmp_path):
    monkeypatch.delenv(runs.RUNS_ENV, raising=False)
    assert runs.runs_root() == Path("runs")
    monkeypatch.setenv(runs.RUNS_ENV, str(tmp_path))
    assert runs.runs_root() == tmp_path
    assert runs.runs_root("elsewhere") == Path("elsewhere")  # the config (or --runs-root) comes first


def test_custom_runs_root_then_evaluate_latest(finished, monkeypatch, capsys):
    """Train with --runs-root X, then `evaluate --run latest` finds the run: with --runs-root X, or with
    FT_RUNS_DIR=X, and says where it wrote."""
    from apps.translator import evaluate

    root = finished.parent.parent
    assert (root / "translator" / runs.LATEST).read_text().strip() == "mine"
    assert runs.Run.load(finished).record.config["output"]["runs_root"] == str(root)
    evaluate.main(["--run", "latest", "--runs-root", str(root), "--limit", "2", "--no-base"])
    assert f"{finished}/eval/test-first2" in capsys.readouterr().out
    monkeypatch.setenv(runs.RUNS_ENV, str(root))
    evaluate.main(["--run", "latest", "--limit", "2", "--no-base"])


def test_two_test_files_are_kept_side_by_side(finished, data, capsys, monkeypatch):
    from apps.translator import evaluate

    evaluate.main(["--run", str(finished), "--no-base"])
    evaluate.main(["--run", str(finished), "--data", str(data.parent / "other.jsonl"), "--no-base"])
    evaluate.main(["--run", str(finished), "--limit", "3", "--no-base"])  # part of a file: beside, not instead
    evaluate.main(["--run", str(finished), "--last", "2", "--no-base"])
    run = runs.Run.load(finished)
    assert {"test", "other", "test-first3", "test-last2"} <= run.record.evaluations.keys()
    test_metrics, test_rows = run.read_eval("test")
    other_metrics, other_rows = run.read_eval("other")
    assert (len(test_rows), len(other_rows)) == (len(data.read_text().splitlines()), 3)
    assert run.read_eval("test-first3")[1] == test_rows[:3] and run.read_eval("test-last2")[1] == test_rows[-2:]
    # other files of the same name, one named like the run's own test file: each beside, none instead
    for folder in ("a", "b"):
        (data.parent / folder).mkdir(exist_ok=True)
        for stem in ("other", "test"):
            (data.parent / folder / f"{stem}.jsonl").write_text((data.parent / "other.jsonl").read_text())
        evaluate.main(["--run", str(finished), "--data", str(data.parent / folder / "other.jsonl"), "--no-base"])
        evaluate.main(["--run", str(finished), "--data", str(data.parent / folder / "test.jsonl"), "--no-base"])
    evaluations = runs.Run.load(finished).record.evaluations
    sources = {name: Path(entry["data"]) for name, entry in evaluations.items()}
    assert sources["test"] == data and sources["other"] == data.parent / "other.jsonl"
    new_files = [data.parent / folder / f"{stem}.jsonl" for folder in ("a", "b") for stem in ("other", "test")]
    assert sorted(str(sources[name]) for name in sources if sources[name] in new_files) == sorted(map(str, new_files))
    again = dict(evaluations)
    evaluate.main(["--run", str(finished), "--data", str(data.parent / "b" / "other.jsonl"), "--no-base"])
    assert runs.Run.load(finished).record.evaluations.keys() == again.keys()  # the same file: replaced in place
    assert test_metrics["data"] == str(data) and other_metrics["data"].endswith("other.jsonl")
    assert run.record.evaluations["other"]["summary"]["finetuned"]["chrf"] == other_metrics["finetuned"]["chrf"]
    # the same relative name typed in two folders: two files, both evaluations kept, each recorded absolute
    for folder in ("a", "b"):
        monkeypatch.chdir(data.parent / folder)
        evaluate.main(["--run", str(finished), "--data", "other.jsonl", "--limit", "2", "--no-base"])
    entries = [e for n, e in runs.Run.load(finished).record.evaluations.items() if n.startswith("other-first2")]
    assert sorted(e["data"] for e in entries) == sorted(str(data.parent / f / "other.jsonl") for f in ("a", "b"))


def test_other_decoding_sits_beside_and_a_base_score_is_never_dropped(finished, tmp_path, capsys):
    """Evaluating again with other decoding settings (a quick greedy check after the run's 4 beams) goes beside
    the earlier evaluation; again with fewer scores (--no-base after one with the base model) moves the earlier
    one aside instead of replacing it."""
    import shutil

    from apps.translator import evaluate

    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("eval"))  # without other tests' evaluations
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "evaluations": {}}))
    evaluate.main(["--run", str(run), "--limit", "2"])  # the run's own decoding (4 beams), with the base model
    first = snapshot(run / "eval" / "test-first2")
    evaluate.main(["--run", str(run), "--limit", "2", "--beams", "1", "--no-loop-guard"])
    evaluate.main(["--run", str(run), "--limit", "2", "--beams", "4"])  # the run's own value: no tag
    names = runs.Run.load(run).record.evaluations.keys()
    assert {"test-first2", "test-first2-beams1-no-loop-guard"} <= names and len(names) == 2
    assert json.loads((run / "eval" / "test-first2-beams1-no-loop-guard" / "metrics.json").read_text())[
        "decoding"]["num_beams"] == 1
    assert snapshot(run / "eval" / "test-first2").keys() == first.keys()
    capsys.readouterr()
    evaluate.main(["--run", str(run), "--limit", "2", "--no-base"])
    aside = [p for p in (run / "eval").iterdir() if p.name.startswith("test-first2.replaced-")]
    assert len(aside) == 1 and "base" in json.loads((aside[0] / "metrics.json").read_text())
    assert "base" not in json.loads((run / "eval" / "test-first2" / "metrics.json").read_text())
    assert all(row["base"] is None for row in runs.Run.load(run).read_eval("test-first2")[1])  # not "": unscored
    assert f"moved to {aside[0]}" in capsys.readouterr().err


def test_the_base_model_is_decoded_greedily_unless_asked(finished, tmp_path, monkeypatch, capsys):
    """The base model is decoded greedily beside the run's 4 beams (the table says so), with the run's other
    settings; --base-beams 4 decodes it as the fine-tuned one, into a folder of its own."""
    import shutil

    from apps.translator import evaluate

    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("eval"))
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "evaluations": {}}))
    widths = []
    real = evaluation.generate
    monkeypatch.setattr(evaluation, "generate", lambda *a, progress=None, **k: widths.append(
        (progress, a[4].num_beams, a[4].beam_pick, a[4].loop_guard)) or real(*a, progress=progress, **k))
    evaluate.main(["--run", str(run), "--limit", "2"])
    assert widths == [("fine-tuned", 4, "consensus", True), ("base", 1, "consensus", True)]
    metrics = json.loads((run / "eval" / "test-first2" / "metrics.json").read_text())
    assert metrics["decoding"]["num_beams"] == 4 and metrics["base_decoding"]["num_beams"] == 1
    assert "the base model was decoded greedily (the fine-tuned with 4); --base-beams 4" in capsys.readouterr().out
    widths.clear()
    evaluate.main(["--run", str(run), "--limit", "2", "--base-beams", "4"])
    assert [w[1] for w in widths] == [4, 4]
    metrics = json.loads((run / "eval" / "test-first2-base-beams4" / "metrics.json").read_text())
    assert metrics["base_decoding"]["num_beams"] == 4 and "--base-beams" not in capsys.readouterr().out
    assert sorted(runs.Run.load(run).record.evaluations) == ["test-first2", "test-first2-base-beams4"]
    with pytest.raises(SystemExit):
        evaluate.main(["--run", str(run), "--base-beams", "0"])
    assert "--base-beams 0: give 1 (greedy) or more" in capsys.readouterr().err


@pytest.fixture(scope="module")
def stepped(tiny_model_dir, data, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("stepped") / "run"
    train_main(TASK, cli_args(tiny_model_dir, data, out, 4, "--data.test", str(data), "--train.lr", "0.05"))
    return out


def test_a_checkpoint_is_scored_beside_the_final_weights(stepped, capsys):
    from safetensors.torch import load_file

    from apps.translator import evaluate
    from shared.generate import load_run

    final = evaluate.evaluate(str(stepped), limit=3, with_base=False, num_beams=1)
    at_last = evaluate.evaluate(str(stepped), limit=3, with_base=False, num_beams=1, checkpoint="4")
    at_two = evaluate.evaluate(str(stepped), limit=3, with_base=False, num_beams=1, checkpoint="checkpoint-2")
    run = runs.Run.load(stepped)
    assert {"test-first3-beams1", "test-first3-beams1-checkpoint-4",
            "test-first3-beams1-checkpoint-2"} <= run.record.evaluations.keys()  # -beams1: not the run's 4 beams
    assert run.record.evaluations["test-first3-beams1"]["weights"] == "adapter"
    assert run.record.evaluations["test-first3-beams1-checkpoint-2"]["weights"] == "checkpoints/checkpoint-2"
    assert at_two["weights"] == str(stepped / "checkpoints" / "checkpoint-2")
    # the last checkpoint holds the final weights: the same translations
    assert run.read_eval("test-first3-beams1-checkpoint-4")[1] == run.read_eval("test-first3-beams1")[1]
    assert at_last["finetuned"] == final["finetuned"]
    # the weights loaded are the checkpoint's own, not the final adapter's
    model, *_ = load_run(run.at_checkpoint(2), limit_vocab=False)
    saved = load_file(stepped / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    name = next(k for k in saved if "lora_B" in k)
    loaded = dict(model.named_parameters())[name.replace(".weight", ".default.weight")]
    assert torch.equal(loaded.detach(), saved[name])
    assert not torch.equal(saved[name], load_file(stepped / "adapter" / "adapter_model.safetensors")[name])


def test_translate_and_export_take_a_checkpoint_too(stepped, tmp_path, capsys):
    from safetensors.torch import load_file

    from apps.translator import translate
    from shared import export

    said = {}
    for checkpoint in (None, "4", "2"):
        translate.main(["--run", str(stepped), "--beams", "1", "Where is the station?"]
                       + (["--checkpoint", checkpoint] if checkpoint else []))
        said[checkpoint] = capsys.readouterr().out
    assert said["4"] == said[None]  # the last checkpoint holds the final weights
    export.main(["--run", str(stepped), "--checkpoint", "2", "--merged", str(tmp_path / "at-2")])
    export.main(["--run", str(stepped), "--merged", str(tmp_path / "final")])
    assert json.loads((tmp_path / "at-2" / "export.json").read_text())["weights"] == "checkpoints/checkpoint-2"
    assert json.loads((tmp_path / "final" / "export.json").read_text())["weights"] == "adapter"
    at_two, final = (load_file(tmp_path / d / "model.safetensors") for d in ("at-2", "final"))
    assert any(not torch.equal(at_two[k], final[k]) for k in final)


def test_a_checkpoint_of_a_stopped_run_can_be_scored_and_a_missing_one_is_named(stepped, tmp_path, capsys):
    import shutil

    from apps.translator import evaluate

    stopped = tmp_path / "stopped"
    shutil.copytree(stepped, stopped)
    shutil.rmtree(stopped / "adapter")  # as a run interrupted after step 2's checkpoint leaves it
    shutil.rmtree(stopped / "checkpoints" / "checkpoint-4")
    record = json.loads((stopped / "run.json").read_text())
    (stopped / "run.json").write_text(json.dumps({**record, "status": "interrupted", "evaluations": {}}))
    assert "has no finished adapter" in cli_error(capsys, lambda: evaluate.main(["--run", str(stopped)]))
    evaluate.main(["--run", str(stopped), "--checkpoint", "last", "--limit", "2", "--no-base", "--beams", "1"])
    assert "test-first2-beams1-checkpoint-2" in runs.Run.load(stopped).record.evaluations
    message = cli_error(capsys, lambda: evaluate.main(["--run", str(stopped), "--checkpoint", "3"]))
    assert "no checkpoint at step 3 (saved steps: 2;" in message
    for spec in ("best", "²"):  # "²" is a digit to str.isdigit
        assert "give a step" in cli_error(capsys, lambda: evaluate.main(["--run", str(stopped), "--checkpoint", spec]))
    (stopped / runs.PISSA_START).mkdir()
    assert "PiSSA checkpoint" in cli_error(capsys, lambda: evaluate.main(["--run", str(stopped), "--checkpoint", "2"]))
    # a checkpoint training is still writing (trainer_state.json comes last) is not read
    (stopped / runs.PISSA_START).rmdir()
    (stopped / "checkpoints" / "checkpoint-2" / "trainer_state.json").unlink()
    assert "is incomplete" in cli_error(capsys, lambda: evaluate.main(["--run", str(stopped), "--checkpoint", "2"]))
    assert "no complete checkpoint" in cli_error(
        capsys, lambda: evaluate.main(["--run", str(stopped), "--checkpoint", "last"]))


def test_checkpoint_all_scores_each_kept_weights_then_the_final_ones(stepped, tmp_path, capsys):
    import shutil

    from apps.translator import evaluate

    run = tmp_path / "run"
    shutil.copytree(stepped, run)
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "evaluations": {}}))
    evaluate.main(["--run", str(run), "--checkpoint", "4", "--no-base", "--beams", "1"])  # the whole file
    capsys.readouterr()
    evaluate.main(["--run", str(run), "--checkpoint", "all", "--limit", "2", "--beams", "1"])
    out = capsys.readouterr().out
    table = out.rsplit("wrote ", 2)[1].splitlines()[1:]  # printed after the last evaluation, before the plot
    assert out.rstrip().endswith(f"wrote {run / 'eval' / 'test-first2-beams1-checkpoints.png'}")
    assert (run / "eval" / "test-first2-beams1-checkpoints.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [line.split()[0] for line in table] == ["weights", "checkpoints/checkpoint-2", "checkpoints/checkpoint-4",
                                                   "adapter"]
    evaluations = runs.Run.load(run).record.evaluations
    assert {n: e["weights"] for n, e in evaluations.items()} == {
        "test-beams1-checkpoint-4": "checkpoints/checkpoint-4",
        "test-first2-beams1-checkpoint-2": "checkpoints/checkpoint-2",
        "test-first2-beams1-checkpoint-4": "checkpoints/checkpoint-4", "test-first2-beams1": "adapter"}
    names = ["test-first2-beams1-checkpoint-2", "test-first2-beams1-checkpoint-4", "test-first2-beams1"]
    for name, chrf in zip(names, [line.split()[2] for line in table[1:]]):
        metrics = json.loads((run / "eval" / name / "metrics.json").read_text())
        assert f"{metrics['finetuned']['chrf']:.2f}" == chrf
        assert ("base" in metrics) == (name == names[0])  # the base model's answers scored once
    prices = [("checkpoints/checkpoint-2", {"finetuned mae": 40.0, "finetuned hit_rate": 0.5}),
              ("adapter", {"finetuned mae": 38.25, "finetuned hit_rate": 0.55})]  # the price product's summaries
    assert evaluation.comparison(prices).splitlines()[2].split() == ["adapter", "38.25", "55.0%"]
    evaluation.plot_comparison(prices, tmp_path / "prices.png")  # rates on a second axis
    assert (tmp_path / "prices.png").stat().st_size > 1000
    # a stopped run: its checkpoints only; a PiSSA run: its final weights only
    shutil.rmtree(run / "adapter")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "interrupted"}))
    path, specs = evaluation.weights_to_score(TASK, str(run), None, "all")
    assert (path, specs) == (str(run), ["2", "4"])
    shutil.copytree(stepped, tmp_path / "pissa")
    (tmp_path / "pissa" / runs.PISSA_START).mkdir()
    assert evaluation.weights_to_score(TASK, str(tmp_path / "pissa"), None, "all")[1] == [None]
    for folder in runs.checkpoint_folders(run / "checkpoints"):
        shutil.rmtree(folder)
    assert "no complete checkpoint and no final weights" in cli_error(
        capsys, lambda: evaluate.main(["--run", str(run), "--checkpoint", "all"]))


def test_training_and_an_evaluation_writing_run_json_at_once_lose_nothing(stepped, tmp_path):
    """A checkpoint scored while the run trains: the training's next log line keeps the evaluation's index
    entry, and an evaluation that ends after the training finished does not turn the run back to running."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(stepped, copy)
    training = runs.Run.load(copy)
    training.record.status = "running"
    training.save()
    evaluating = runs.Run.load(copy).at_checkpoint(2)  # loaded while the run trains
    evaluating.write_eval("test-checkpoint-2", "pairs.jsonl", {"finetuned": {}}, [])
    training.record.loss_curve = training.record.loss_curve + [{"step": 5, "loss": 0.5}]
    training.save()  # a log line of the training, from its own copy of the record
    assert "test-checkpoint-2" in runs.Run.load(copy).record.evaluations
    training.record.status = "completed"
    training.save()
    evaluating.write_eval("other-checkpoint-2", "other.jsonl", {"finetuned": {}}, [])  # its record says running
    record = runs.Run.load(copy).record
    assert record.status == "completed" and record.loss_curve[-1] == {"step": 5, "loss": 0.5}
    assert {"test-checkpoint-2", "other-checkpoint-2"} <= record.evaluations.keys()
    # an entry whose folder is gone (a resumed run moves eval/ aside) is not brought back
    shutil.rmtree(copy / "eval" / "other-checkpoint-2")
    training.record.evaluations.pop("other-checkpoint-2", None)
    training.save()
    assert "other-checkpoint-2" not in runs.Run.load(copy).record.evaluations


# ---------------------------------------------------------------- what training may do with a folder

def test_a_folder_of_the_users_files_is_never_touched(tiny_model_dir, data, tmp_path, capsys):
    own = tmp_path / "runs" / "translator" / "my-notes"
    own.mkdir(parents=True)
    (own / "notes.md").write_text("# my notes\n")
    (own / "checkpoints").mkdir()
    (own / "checkpoints" / "keep.txt").write_text("mine")
    (own.parent / runs.LATEST).write_text("somebody-else\n")
    before = snapshot(tmp_path)
    for extra in ((), ("--overwrite",), ("--resume",)):
        message = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, data, own, 2, *extra)))
        assert str(own) in message and ("not a run" in message or "no run.json" in message)
    assert snapshot(tmp_path) == before


def test_a_finished_run_is_not_replaced_without_asking(finished, tiny_model_dir, data, capsys):
    before = snapshot(finished)
    message = cli_error(capsys, lambda: train_main(TASK, cli_args(tiny_model_dir, data, finished, 2)))
    assert "finished run" in message and "--resume" in message and "--overwrite" in message
    assert snapshot(finished) == before


def test_overwrite_moves_the_old_run_aside(tiny_model_dir, data, tmp_path, monkeypatch):
    run = tmp_path / "elsewhere" / "run"
    train_main(TASK, cli_args(tiny_model_dir, data, run, 2))
    before = snapshot(run)
    train_main(TASK, cli_args(tiny_model_dir, data, run, 2, "--overwrite"))
    aside = [p for p in run.parent.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # renamed, byte for byte
    assert runs.Run.load(run).finished
    assert not (tmp_path / runs.LATEST).exists() and not (run.parent / runs.LATEST).exists()  # outside the root
    # typed from inside the run: '.' is the run's folder
    before = snapshot(run)
    monkeypatch.chdir(run)
    train_main(TASK, cli_args(tiny_model_dir, data, ".", 2, "--overwrite"))
    aside = [p for p in run.parent.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 2 and before in [snapshot(p) for p in aside] and runs.Run.load(run).finished


@pytest.mark.parametrize("extra", [("--model", "/no/such/model"), ("--model.max_length", "3")])
def test_overwrite_leaves_the_old_run_in_place_when_the_new_one_cannot_start(tiny_model_dir, data, tmp_path,
                                                                            capsys, extra):
    """A wrong model name, or data with no row short enough, stops the new run after its checks: the old run
    must still be where it was, not renamed aside with nothing in its place."""
    root = tmp_path / "runs"
    run = root / "translator" / "mine"
    train_main(TASK, cli_args(tiny_model_dir, data, run, 2, "--runs-root", str(root)))
    before, latest = snapshot(run), (run.parent / runs.LATEST).read_text()
    cli_error(capsys, lambda: train_main(TASK, [*cli_args(tiny_model_dir, data, run, 2, "--overwrite",
                                                          "--runs-root", str(root)), *extra]))
    assert snapshot(run) == before and (run.parent / runs.LATEST).read_text() == latest
    assert not [p for p in run.parent.iterdir() if ".replaced-" in p.name]


def test_a_run_written_into_the_folder_while_this_one_loaded_is_not_replaced(finished):
    """Two trainings started into the same new folder: the second, finding a run there once its model is
    loaded, stops instead of writing over it."""
    from shared import data as data_mod
    from shared.train import Preflight, _owned

    before = snapshot(finished)
    prep = Preflight(finished, [], [], data_mod.DataReport())  # what the check saw: no run there yet
    with pytest.raises(ConfigError, match="another training wrote a run into"):
        with _owned(prep):
            pass
    assert snapshot(finished) == before


def test_resume_refuses_what_its_checkpoints_cannot_take(finished, tiny_model_dir, data, tmp_path, capsys):
    """A changed adapter shape (or model, data, batch) on --resume would fail to load the checkpoint after the
    run's record was rewritten, or train on other rows than it skips: refused in one line, nothing touched.
    --config and --profile would be dropped silently: refused too."""
    before = snapshot(finished)
    args = cli_args(tiny_model_dir, data, finished, 2, "--resume")
    message = cli_error(capsys, lambda: train_main(TASK, [*args, "--lora.r", "8"]))
    assert "lora.r: 4 -> 8" in message and "--output-dir NEW_DIR" in message
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text())
    assert "data.train" in cli_error(capsys, lambda: train_main(TASK, [*args, "--data", str(other)]))
    assert "train.batch_size: 4 -> 2" in cli_error(capsys, lambda: train_main(TASK, [*args, "--train.batch_size", "2"]))
    for flag, value in (("--config", str(tmp_path / "c.yaml")), ("--profile", "cpu")):
        assert f"{flag} cannot apply" in cli_error(capsys, lambda: train_main(TASK, [*args, flag, value]))
    assert snapshot(finished) == before


def test_resume_at_the_last_step_trains_no_further(tiny_model_dir, data, tmp_path):
    """A run stopped while writing adapter/ after its last checkpoint, where max_steps ends mid-epoch: --resume
    writes the checkpoint's weights, without the one step more that transformers would train."""
    import shutil

    from safetensors.torch import load_file

    run = tmp_path / "run"
    args = cli_args(tiny_model_dir, data, run, 2, "--train.scheduler", "constant")  # any extra step would show
    train_main(TASK, args)
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    shutil.rmtree(run / "adapter")
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    train_main(TASK, [*args, "--resume"])
    train = runs.Run.load(run).record.train
    assert (train["global_step"], train["steps_this_session"]) == (2, 0)
    again = load_file(run / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_a_relative_data_path_is_recorded_as_the_file_it_named(tmp_path, monkeypatch):
    """A run trained on `pairs.jsonl` in one folder and evaluated from another must not read that folder's
    pairs.jsonl: the run records absolute paths."""
    from shared.cli import build_config, train_parser

    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "pairs.jsonl", [{"en": "Hi.", "ko": "안녕."}])
    monkeypatch.chdir(tmp_path / "a")
    args, rest = train_parser(TASK).parse_known_args(["--data", "pairs.jsonl", "--data.test", "./pairs.jsonl",
                                                      "--output-dir", str(tmp_path / "run")])
    cfg, *_ = build_config(TASK, args, rest)
    assert cfg.data.train == cfg.data.test == str(tmp_path / "a" / "pairs.jsonl")


def test_a_locked_run_folder_refuses_a_second_training(finished):
    before = snapshot(finished)
    with runs.RunLock(finished):
        fd = os.open(finished, os.O_RDONLY)
        with pytest.raises(BlockingIOError):  # another process's view: the folder is locked
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        with pytest.raises(ConfigError, match="in use by another training"):
            with runs.RunLock(finished):
                pass
    with runs.RunLock(finished):  # released when the first training ends
        pass
    assert snapshot(finished) == before  # locking writes nothing


# ---------------------------------------------------------------- damaged run records

DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "not UTF-8": lambda text: "\udcff",
    "a list": lambda text: "[]",
    "no marker": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "format"}),
    "no config": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "config"}),
    "bad status": lambda text: json.dumps({**json.loads(text), "status": "done?"}),
    "config not a mapping": lambda text: json.dumps({**json.loads(text), "config": [1, 2]}),
    "unknown config key": lambda text: json.dumps({**json.loads(text), "config": {"lora": {"rank": 2}}}),
    "evaluation not a mapping": lambda text: json.dumps({**json.loads(text), "evaluations": {"test": 5}}),
}


@pytest.fixture()
def damaged_copy(finished, tmp_path):
    import shutil

    def make(kind: str) -> Path:
        copy = tmp_path / kind.replace(" ", "-")
        shutil.copytree(finished, copy)
        text = (copy / "run.json").read_text(encoding="utf-8")
        damaged = DAMAGE[kind](text)
        (copy / "run.json").write_bytes(b"\xff\xfe\x00garbage" if kind == "not UTF-8" else damaged.encode())
        return copy
    return make


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_run_record_is_one_line_naming_the_file(kind, damaged_copy, tiny_model_dir, data, capsys):
    from apps.price_predictor import predict
    from apps.translator import evaluate, translate
    from shared import export

    run = damaged_copy(kind)
    before = snapshot(run)
    commands = [
        lambda: evaluate.main(["--run", str(run)]),
        lambda: translate.main(["--run", str(run), "Hello."]),
        lambda: predict.main(["--run", str(run), "--title", "Kettle"]),
        lambda: export.main(["--run", str(run), "--merged", str(run.parent / f"{run.name}-merged")]),
        lambda: train_main(TASK, cli_args(tiny_model_dir, data, run, 2, "--resume")),
    ]
    for command in commands:
        message = cli_error(capsys, command)
        # predict refuses a translator run once its record reads well enough to say which product it is
        assert str(run / "run.json") in message or f"{run} is a translator run" in message
    assert snapshot(run) == before


def test_a_run_of_another_product_is_refused(finished, capsys):
    from apps.price_predictor import evaluate as price_evaluate
    from apps.price_predictor import predict

    for command in (lambda: predict.main(["--run", str(finished), "--title", "Kettle"]),
                    lambda: price_evaluate.main(["--run", str(finished)])):
        assert "is a translator run, not a price_predictor run" in cli_error(capsys, command)


@pytest.mark.parametrize("argv, message", [
    (["--limit", "-3"], "--limit must be 0 or more"),
    (["--last", "-1"], "--last must be 0 or more"),
    (["--limit", "2", "--last", "2"], "cannot be combined"),
    (["--batch-size", "0"], "--batch-size 0: it must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: it must be >= 1"),
    (["--repetition-penalty", "-1"], "--repetition-penalty -1.0: it must be > 0"),
    (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size -2: it must be >= 0"),
])
def test_counts_are_checked(finished, argv, message, capsys, monkeypatch):
    from apps.translator import evaluate
    from shared import evaluation

    monkeypatch.setattr(evaluation, "load_run", lambda *a, **k: pytest.fail("loaded a model for a bad setting"))
    before = snapshot(finished)
    assert message in cli_error(capsys, lambda: evaluate.main(["--run", str(finished), *argv]))
    assert snapshot(finished) == before


def test_empty_input_is_refused_before_loading(finished, capsys, monkeypatch):
    from apps.price_predictor import predict
    from apps.translator import translate

    for module in (translate, predict):
        monkeypatch.setattr(module, "load_run", lambda *a, **k: pytest.fail("loaded a model for empty input"))
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert "no English text" in cli_error(capsys, lambda: translate.main(["--run", str(finished), "   "]))
    assert "--title is empty" in cli_error(capsys, lambda: predict.main(["--run", str(finished), "--title", " "]))


def test_price_evaluation_reads_everything_before_generating(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """The run's training file moved: evaluate stops at once, before any generation, naming the file."""
    from apps.price_predictor import evaluate
    from apps.price_predictor.task import TASK as PRICE
    from shared import evaluation

    items = [{"title": f"Item {i}", "description": "A thing.", "price": 10.0 + i} for i in range(12)]
    train_file = write_jsonl(tmp_path / "items.jsonl", items)
    test_file = write_jsonl(tmp_path / "test.jsonl", items[:3])
    run = tmp_path / "price-run"
    train_main(PRICE, cli_args(tiny_model_dir, train_file, run, 1, "--data.test", str(test_file)))
    train_file.rename(tmp_path / "moved.jsonl")
    monkeypatch.setattr(evaluation, "predict_both", lambda *a, **k: pytest.fail("generated before checking"))
    message = cli_error(capsys, lambda: evaluate.main(["--run", str(run)]))
    assert "items.jsonl" in message


def test_every_malformed_test_file_stops_evaluate_before_loading(finished, tmp_path, capsys, monkeypatch):
    """The data-file table of tests/test_validation.py, through `evaluate --data`: exit 2, one line naming the
    file, no model loaded, the file and the run byte-identical."""
    from apps.translator import evaluate
    from shared import evaluation

    from .test_validation import DATA_CASES

    monkeypatch.setattr(evaluation, "load_run", lambda *a, **k: pytest.fail("loaded a model for a bad test file"))
    before = snapshot(finished)
    for case, name, content, *_ in DATA_CASES:
        path = tmp_path / case.replace(" ", "-").replace(":", "").replace(",", "") / name
        path.parent.mkdir()
        path.write_bytes(content)
        message = cli_error(capsys, lambda: evaluate.main(["--run", str(finished), "--data", str(path)]))
        assert str(path) in message, case
        assert path.read_bytes() == content, case
    assert snapshot(finished) == before


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_translate_streams_exits_cleanly(finished, signum, code):
    """Ctrl-C or SIGTERM while the generating thread streams: exit 130 / 143 with one line, not an abort."""
    import signal
    import subprocess
    import sys

    from .conftest import ROOT

    launcher = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                f"sys.argv = ['translate', '--run', {str(finished)!r}]; "
                "runpy.run_module('apps.translator.translate', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", launcher], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdin.write("Where is the station?\n" * 2000)
    proc.stdin.close()
    assert proc.stdout.readline()  # streaming has started
    proc.send_signal(signal.Signals(signum))
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == code, err
    assert "Traceback" not in err and "Aborted" not in err
    assert err.strip().splitlines()[-1] == f"stopped ({'Ctrl-C' if code == 130 else 'SIGTERM'})"


def test_text_that_is_not_utf8_is_one_line_naming_where(finished, capsys, monkeypatch):
    """Bytes that are not UTF-8 reach Python from stdin or argv as surrogates, which the tokenizer rejects with
    a TypeError after the model has loaded: checked before, in one line."""
    import io

    from apps.price_predictor import predict
    from apps.translator import translate

    monkeypatch.setattr("sys.stdin", io.StringIO("Fine.\nCaf\udce9 is open.\n"))
    message = cli_error(capsys, lambda: translate.main(["--run", str(finished)]))
    assert message.startswith("error: stdin, line 2:") and "not valid UTF-8 (byte 0xe9 at character 4)" in message
    message = cli_error(capsys, lambda: predict.main(["--run", str(finished), "--title", "caf\udce9"]))
    assert message.startswith("error: --title:") and "byte 0xe9" in message


def test_translate_keeps_one_output_line_per_input_line(finished, capsys, monkeypatch):
    import io

    from apps.translator import translate

    monkeypatch.setattr("sys.stdin", io.StringIO("Hello.\n\n   \nThank you.\n"))
    translate.main(["--run", str(finished), "--beams", "1"])
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 5 and lines[1] == lines[2] == "" and lines[4] == ""  # 4 lines, each ended by a break


def test_a_run_still_training_points_to_its_checkpoints_not_to_resume(finished, tmp_path, capsys):
    import shutil

    from apps.translator import translate

    run = tmp_path / "training now"  # a space: the printed commands must still paste
    shutil.copytree(finished, run)
    shutil.rmtree(run / "adapter")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "status": "running"}))
    with runs.RunLock(run):  # as the training holds it
        message = cli_error(capsys, lambda: translate.main(["--run", str(run), "Hello."]))
    assert "is still training" in message and "--checkpoint last" in message and "--resume" not in message
    message = cli_error(capsys, lambda: translate.main(["--run", str(run), "Hello."]))  # a training that died
    assert f"--output-dir '{run}' --resume" in message


def test_resume_with_more_steps_follows_the_longer_schedule_at_once(tiny_model_dir, data, tmp_path):
    """Resumed to 4 steps from a finished 2-step run (linear decay, no warmup): the optimizer held the old
    schedule's last rate, 0, and step 3 trained at it; it must train at the 4-step schedule's rate."""
    run = tmp_path / "run"
    from safetensors.torch import load_file

    train_main(TASK, cli_args(tiny_model_dir, data, run, 2, "--train.scheduler", "linear"))
    train_main(TASK, cli_args(tiny_model_dir, data, run, 3, "--train.scheduler", "linear", "--resume",
                              "--train.save_steps", "1"))
    two, three = (load_file(run / "checkpoints" / f"checkpoint-{n}" / "adapter_model.safetensors") for n in (2, 3))
    assert any(not torch.equal(two[k], three[k]) for k in two)  # step 3 moved the weights: not a rate of 0
    train_main(TASK, cli_args(tiny_model_dir, data, run, 4, "--train.scheduler", "linear", "--resume"))
    rates = {p["step"]: p["learning_rate"] for p in runs.Run.load(run).record.loss_curve if "learning_rate" in p}
    lr = json.loads((run / "run.json").read_text())["config"]["train"]["lr"]
    assert rates[3] == pytest.approx(lr * 1 / 3) and rates[4] == pytest.approx(lr * 1 / 4)
