"""The real commands, run as a user runs them: clean one-line errors, and (slow) the embedded model end to end."""
import json

import pytest

from .conftest import ROOT, run, write_jsonl


def test_bad_row_is_one_clear_line(tmp_path, tiny_model_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"en": "Hi", "ko": "안녕"}, {"en": "Bye", "korean": ""}])
    r = run(["apps.translator.train", "--data", str(bad), "--model", str(tiny_model_dir),
             "--model.chat_template", "chatml", "--output-dir", str(tmp_path / "run")], cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "bad.jsonl, line 2, field 'ko': is empty" in r.stderr
    assert not (tmp_path / "run").exists()  # nothing half-made


@pytest.mark.parametrize("args, message", [
    (["--lora.rank", "8"], "unknown config key 'lora.rank'"),
    (["--train.lr", "fast"], "expects float"),
    (["--profile", "gpu"], "profile 'gpu' needs a CUDA GPU"),
    (["--model", "/no/such/folder"], "neither a model folder nor a .gguf file"),
])
def test_config_errors_exit_2_without_traceback(args, message, tmp_path):
    r = run(["apps.translator.train", *args], cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_evaluate_without_runs_says_how_to_train(tmp_path):
    r = run(["apps.translator.evaluate"], cwd=tmp_path)
    assert r.returncode == 2 and "python -m apps.translator.train" in r.stderr


@pytest.mark.slow
def test_embedded_model_train_evaluate_translate(embedded_run):
    """A few steps of the real cpu profile on the shipped data, then evaluation and streaming translation."""
    run_dir, r = embedded_run("translator")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 3/3 loss" in r.stderr and "left" in r.stderr  # progress with time left
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["chat_format"] == "gemma"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()

    r = run(["apps.translator.evaluate", "--run", str(run_dir), "--limit", "3"], cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run_dir / "eval" / "test-first3" / "metrics.json").read_text())
    for side in ("base", "finetuned"):
        assert {"bleu", "chrf", "signature", "n"} <= metrics[side].keys() and metrics[side]["n"] == 3
    preds = [json.loads(x) for x in (run_dir / "eval" / "test-first3" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and {"source", "reference", "base", "finetuned"} <= preds[0].keys()
    assert "BLEU signature" in r.stdout
    assert metrics["decoding"]["num_beams"] == 4 and metrics["decoding"]["beam_pick"] == "consensus"

    for beams in ([], ["--beams", "1"]):  # the run's beam search, then greedy streaming
        r = run(["apps.translator.translate", "--run", str(run_dir), *beams], cwd=ROOT, stdin="Hello.\nThank you.\n")
        assert r.returncode == 0, r.stderr[-3000:]
        assert len(r.stdout.strip().splitlines()) == 2
