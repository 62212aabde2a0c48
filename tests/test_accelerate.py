"""Training under `accelerate launch` with several processes: one run folder (named by rank 0), one adapter,
written by rank 0 only, and the same losses and adapter as one process with the same global batch
(train.batch_size is the global batch; each process takes its slice of every batch)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from apps.translator.task import TASK
from shared import runs
from shared.config import ConfigError, resolve
from shared.train import check_processes
from tests.conftest import PAIRS, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 1e-4  # per step; measured 5e-7 apart (float32 sums in another order), adapters 4e-7


def _args(model_dir: Path, data: Path) -> list[str]:
    return ["--model", str(model_dir), "--model.chat_template", "chatml", "--model.dtype", "float32",
            "--model.max_length", "400", "--data", str(data), "--max-steps", "4", "--set", "train.batch_size=8",
            "--set", "train.bf16=false", "--set", "train.logging_steps=1", "--set", "train.lr=3e-3",
            "--set", "train.save_steps=2",
            # LoRA dropout draws its masks per process, so with dropout > 0 the two runs see other masks and agree
            # only statistically (docs/gpu.md); without it they must agree to float32 rounding
            "--set", "lora.dropout=0",
            # and so must the activations kept for backward: in bf16 (the float32 default on a CPU), a sum taken in
            # another order can round to the next bf16 value (adapters measured 1.4e-5 apart)
            "--set", "train.saved_activations=computed"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_batch_must_split_evenly(monkeypatch):
    cfg = resolve(cli={"train.batch_size": 6})
    check_processes(cfg)  # one process: anything goes
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="global batch and must split evenly over the 4 processes"):
        check_processes(cfg)
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_processes(cfg)


def test_one_process_names_its_run_folder_without_a_process_group(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    path = runs.new_run_dir(tmp_path, "translator", "/models/tiny")
    assert path.parent == tmp_path / "translator" and path.name.endswith("-tiny") and not path.exists()
    assert runs.process_rank() == (0, 1) and runs.is_main_process()


@pytest.mark.slow
def test_two_processes_train_like_one(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"en": f"{e} ({i})", "ko": k} for i in range(6) for e, k in PAIRS])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    launched = subprocess.run(
        # --multi_gpu is accelerate's torchrun launcher; with no GPU the processes train on the CPU (gloo).
        # (`accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set up: docs/gpu.md.)
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
         "-m", "apps.translator.train", *_args(tiny_model_dir, data), "--set", f"output.runs_root={tmp_path / 'runs'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert launched.returncode == 0, launched.stderr[-4000:]

    product = tmp_path / "runs" / "translator"
    folders = [d for d in product.iterdir() if d.is_dir()]
    assert len(folders) == 1, folders  # rank 0 named the folder; rank 1 used the same one
    run = folders[0]
    assert (product / "LATEST").read_text().strip() == run.name
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["train"]["global_step"] == 4
    assert sorted(p.name for p in run.iterdir()) == [".run.json.lock", "adapter", "checkpoints", "config.yaml",
                                                     "data_report.json", "loss.png", "output_vocab.json", "run.json"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    checkpoint = run / "checkpoints" / "checkpoint-4"
    assert {p.name for p in checkpoint.glob("rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}  # 2 processes

    # One process, the same global batch of 8, in this process.
    from shared.cli import train_main
    train_main(TASK, [*_args(tiny_model_dir, data), "--output-dir", str(tmp_path / "single")])
    single = json.loads((tmp_path / "single" / "run.json").read_text())

    def losses(rec, key):
        return [(p["step"], p[key]) for p in rec["loss_curve"] if key in p]
    two, one = losses(record, "loss"), losses(single, "loss")
    assert [s for s, _ in two] == [s for s, _ in one] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(two, one):
        assert a == pytest.approx(b, abs=LOSS_TOLERANCE)
    assert record["eval_loss"] == pytest.approx(single["eval_loss"], abs=LOSS_TOLERANCE)
    assert one[0][1] - one[-1][1] > 0.05  # it did learn something, so equal losses are not a coincidence
    a = load_file(run / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "single" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), (key, (a[key] - b[key]).abs().max())


@pytest.mark.parametrize("name", ["cpu_2proc", "multi_gpu_ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_load(name):
    """Each config file is one accelerate accepts (only cpu_2proc runs here: docs/gpu.md says which ran where)."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.num_processes == 2 and cfg.num_machines == 1
    assert "Ran here:" in path.read_text()
    if name.startswith("deepspeed"):
        ds = json.loads((ROOT / cfg.deepspeed_config["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == int(name[-1])
        assert ds["train_micro_batch_size_per_gpu"] == "auto"  # filled by the Trainer from the run config


def test_trainer_arguments_exist_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    """Under DeepSpeed ZeRO-3, transformers partitions the weights while loading only when the Trainer's
    arguments (which register the DeepSpeed config) already exist; otherwise every process loads the whole
    model. The run therefore builds them first and keeps them alive through the load."""
    from shared import models
    from shared import train as train_module

    made = []
    real_args, real_load = train_module.sft_config, models.load

    def sft_config(*args, **kwargs):
        made.append(real_args(*args, **kwargs))
        return made[-1]

    def load(*args, **kwargs):
        assert made, "the model loaded before the Trainer's arguments existed"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(train_module, "sft_config", sft_config)
    monkeypatch.setattr(models, "load", load)
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"en": e, "ko": k} for e, k in PAIRS])
    flat = {"model.name": str(tiny_model_dir), "model.chat_template": "chatml", "model.dtype": "float32",
            "data.train": str(data), "data.valid": str(data), "train.max_steps": 1, "train.batch_size": 4,
            "train.bf16": "false", "lora.r": 4, "lora.target_modules": ["q_proj"]}
    train_module.train(TASK, resolve(cli=flat), tmp_path / "run", "test")
    assert len(made) == 1
