"""Training writes a complete run folder; an interrupted run resumes from its checkpoint and ends where an
uninterrupted run with the same seed ends."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from apps.translator.task import TASK
from shared.config import resolve
from shared.train import train


def _cfg(model_dir, data, out, **extra):
    flat = {"model.name": str(model_dir), "model.chat_template": "chatml", "model.dtype": "float32",
            "data.train": str(data), "data.valid_fraction": 0.1, "train.max_steps": 4, "train.batch_size": 4,
            "train.save_steps": 2, "train.logging_steps": 1, "train.bf16": "false", "lora.r": 4,
            "lora.target_modules": ["q_proj", "v_proj"], "output.dir": str(out), **extra}
    return resolve(cli=flat)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated Ctrl-C")


def _adapter(run):
    return load_file(run / "adapter" / "adapter_model.safetensors")


def test_run_folder_contents(tiny_model_dir, pairs_file, tmp_path):
    run = train(TASK, _cfg(tiny_model_dir, pairs_file, tmp_path / "run"), tmp_path / "run", "test")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["train"]["global_step"] == 4
    assert record["config"]["lora"]["r"] == 4 and "torch" in record["versions"]
    assert [p["step"] for p in record["loss_curve"] if "loss" in p] == [1, 2, 3, 4]
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/tokenizer.json",
                 "config.yaml", "data_report.json", "loss.png", "checkpoints/checkpoint-4"):
        assert (run / name).exists(), name
    report = json.loads((run / "data_report.json").read_text())
    assert report["rows_read"] == 32 and report["dropped"] == {"duplicate": 24}
    from peft import PeftConfig
    assert PeftConfig.from_pretrained(str(run / "adapter")).r == 4  # loads with PEFT


def test_interrupted_run_resumes_and_matches(tiny_model_dir, pairs_file, tmp_path):
    from shared.log import log  # noqa: F401  (import before timing-sensitive work)

    full = train(TASK, _cfg(tiny_model_dir, pairs_file, tmp_path / "full"), tmp_path / "full", "test")
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(TASK, _cfg(tiny_model_dir, pairs_file, cut), cut, "test", callbacks=(StopAt(3),))
    record = json.loads((cut / "run.json").read_text())
    assert record["status"] == "interrupted" and not (cut / "adapter").exists()
    assert (cut / "checkpoints" / "checkpoint-2").is_dir()

    train(TASK, _cfg(tiny_model_dir, pairs_file, cut), cut, "test", resume=True)
    record = json.loads((cut / "run.json").read_text())
    assert record["status"] == "completed" and record["resumed_from"].endswith("checkpoint-2")
    assert record["train"]["steps_this_session"] == 2
    a, b = _adapter(full), _adapter(cut)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    full_curve = json.loads((full / "run.json").read_text())["loss_curve"]
    assert [p["loss"] for p in record["loss_curve"] if "loss" in p][-1] == pytest.approx(
        [p["loss"] for p in full_curve if "loss" in p][-1], abs=1e-5)
