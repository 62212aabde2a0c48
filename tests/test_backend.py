"""Backend selection (shared/models.py:resolve_backend) and its messages, and the Unsloth backend's calls
(shared/unsloth_backend.py), checked on the CPU against a stand-in `unsloth` module: this project's machines
have no GPU, so the real package never runs here."""
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
import tomllib
import torch

from shared import models
from shared.config import ConfigError, ModelConfig, resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def machine(monkeypatch):
    """Pretend CUDA and/or the unsloth package are there: machine(cuda=True, unsloth=False)."""
    real_find_spec = importlib.util.find_spec

    def set_up(cuda: bool, unsloth: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: (object() if unsloth else None) if name == "unsloth"
                            else real_find_spec(name, *a))
    return set_up


@pytest.mark.parametrize("cuda, unsloth, expected", [(False, False, "transformers"), (False, True, "transformers"),
                                                     (True, False, "transformers"), (True, True, "unsloth")])
def test_auto_picks_unsloth_only_on_cuda_with_the_package(machine, cuda, unsloth, expected):
    machine(cuda, unsloth)
    assert models.resolve_backend(ModelConfig(backend="auto")) == expected
    assert models.resolve_backend(ModelConfig(backend="transformers")) == "transformers"


def test_auto_picks_transformers_under_several_processes(machine, monkeypatch):
    machine(cuda=True, unsloth=True)
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch: DDP/FSDP/DeepSpeed wrap the transformers model
    assert models.resolve_backend(ModelConfig(backend="auto")) == "transformers"


def test_unsloth_without_cuda_says_why_and_what_to_do(machine):
    machine(cuda=False, unsloth=True)
    with pytest.raises(ConfigError) as e:
        models.resolve_backend(ModelConfig(backend="unsloth"))
    msg = str(e.value)
    assert "needs a CUDA GPU" in msg and "NVIDIA" in msg and "docs/gpu.md" in msg
    assert "--backend transformers" in msg and "\n" not in msg


def test_unsloth_not_installed_says_how_to_install(machine):
    machine(cuda=True, unsloth=False)
    with pytest.raises(ConfigError) as e:
        models.resolve_backend(ModelConfig(backend="unsloth"))
    msg = str(e.value)
    assert "not installed" in msg and "docs/gpu.md" in msg and "--backend transformers" in msg


def test_the_gpu_extra_never_leaves_unsloth_to_the_resolver():
    """An unpinned unsloth next to transformers==5.23 / trl==1.16 resolves to 2025.7.2, which fails to import:
    the extra holds unsloth only pinned (scripts/check_gpu_install.py then checks its own pins)."""
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for req in map(Requirement, extras["gpu"]):
        if req.name.lower() in ("unsloth", "unsloth-zoo", "unsloth_zoo"):
            assert str(req.specifier).startswith("=="), f"{req} is not pinned"


@pytest.fixture()
def installed(monkeypatch):
    """Pretend these distributions are installed: installed(unsloth=("2026.10.9", [requires...]), transformers=...)."""
    from importlib import metadata

    def set_up(**dists):
        def version(name):
            if name.replace("-", "_") not in dists:
                raise metadata.PackageNotFoundError(name)
            return dists[name.replace("-", "_")][0]
        monkeypatch.setattr(metadata, "version", version)
        monkeypatch.setattr(metadata, "requires", lambda name: dists[name.replace("-", "_")][1])
    return set_up


UNSLOTH_2026_10_9 = ("2026.10.9", ["unsloth_zoo>=2026.10.10", "torch<2.15.0,>=2.4.0",
                                   "transformers!=5.0.0,!=5.1.0,<=5.17.0,>=4.52.4", "trl!=0.19.0,<=1.15.0,>=0.18.2",
                                   'fastapi==0.141.1; python_version >= "3.10" and extra == "studio"'])


def test_an_unsloth_whose_pins_exclude_ours_is_never_picked(machine, installed):
    """What pip does with `pip install unsloth` next to this project: unsloth's own caps are not met."""
    machine(cuda=True, unsloth=True)
    installed(unsloth=UNSLOTH_2026_10_9, transformers=("5.23.0", []), trl=("1.16.0", []), torch=("2.13.0+cu128", []))
    conflict = models.unsloth_conflict()
    assert conflict.startswith("unsloth 2026.10.9 needs transformers") and "transformers 5.23.0 is installed" in conflict
    assert models.resolve_backend(ModelConfig(backend="auto")) == "transformers"
    with pytest.raises(ConfigError) as e:
        models.resolve_backend(ModelConfig(backend="unsloth"))
    assert "unsloth 2026.10.9 needs transformers" in str(e.value) and "--backend transformers" in str(e.value)
    assert "\n" not in str(e.value)
    installed(unsloth=UNSLOTH_2026_10_9, transformers=("5.17.0", []), trl=("1.15.0", []), torch=("2.13.0+cu128", []))
    assert models.unsloth_conflict() is None and models.resolve_backend(ModelConfig(backend="auto")) == "unsloth"


def test_an_unsloth_that_fails_to_import_stops_with_one_line(monkeypatch):
    from shared.unsloth_backend import activate

    monkeypatch.setitem(sys.modules, "unsloth", None)  # `import unsloth` raises ImportError
    with pytest.raises(ConfigError) as e:
        activate()
    assert "does not import" in str(e.value) and "--backend transformers" in str(e.value)


def test_unsloth_is_imported_only_for_its_backend(tmp_path):
    """Importing the project, and building a transformers-backend run's Trainer arguments, on a CUDA machine with a
    broken unsloth installed (2025.7.2 on transformers 5.23 fails at import) must not import it."""
    fake = tmp_path / "site" / "unsloth"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"cannot import name 'HybridCache' from 'transformers'\")\n")
    script = (f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); import torch\n"
              "real = torch.cuda.is_available\n"
              "torch.cuda.is_available = lambda: True\n"
              "import shared\n"  # the package import, where unsloth used to be imported whenever CUDA was visible
              "torch.cuda.is_available = real\n"  # libraries probe real CUDA streams at import
              "import shared.models, shared.train, apps.translator.train\n"
              "from pathlib import Path\n"
              "from shared.config import resolve\n"
              "cfg = resolve(cli={'model.backend': 'transformers'})\n"
              "torch.cuda.is_available = lambda: True\n"
              "torch.cuda.get_device_capability = lambda *a: (8, 0)\n"
              "try:\n    shared.train.sft_config(cfg, Path('x'), False)\n"
              "except Exception as e:\n    print('sft_config:', type(e).__name__)\n"
              "print('unsloth imported' if 'unsloth' in sys.modules else 'unsloth not imported')\n")
    import subprocess
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "unsloth not imported"


def test_backend_option_on_the_command_line(machine, tiny_model_dir, pairs_file, tmp_path, capsys):
    """--backend is a shortcut for model.backend; on this CPU machine 'unsloth' stops with one line, exit 2,
    before the model loads and before any run folder exists."""
    import argparse

    from apps.translator.task import TASK
    from shared.cli import build_config, train_main, train_parser

    argv = ["--backend", "transformers", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "r")]
    args, rest = train_parser(TASK).parse_known_args(argv)
    assert isinstance(args, argparse.Namespace)
    assert build_config(TASK, args, rest)[0].model.backend == "transformers"

    machine(cuda=False, unsloth=True)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train_main(TASK, ["--backend", "unsloth", "--model", str(tiny_model_dir), "--data", str(pairs_file),
                          "--model.chat_template", "chatml", "--output-dir", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: backend 'unsloth' needs a CUDA GPU") and "docs/gpu.md" in err
    assert not out.exists()


# ---------------------------------------------------------------- the Unsloth calls, with a stand-in module

class FakeFastLanguageModel:
    """Records the calls; does what Unsloth does in plain transformers + PEFT, so training runs on the CPU."""
    calls: ClassVar[list] = []

    @classmethod
    def from_pretrained(cls, model_name, **kw):
        from transformers import AutoModelForCausalLM
        cls.calls.append(("from_pretrained", model_name, kw))
        return AutoModelForCausalLM.from_pretrained(model_name, dtype=kw["dtype"]), object()

    @classmethod
    def get_peft_model(cls, model, **kw):
        from peft import LoraConfig, get_peft_model
        cls.calls.append(("get_peft_model", kw))
        torch.manual_seed(kw["random_state"])
        return get_peft_model(model, LoraConfig(r=kw["r"], lora_alpha=kw["lora_alpha"], bias=kw["bias"],
                                                lora_dropout=kw["lora_dropout"], target_modules=kw["target_modules"],
                                                task_type="CAUSAL_LM"))

    @classmethod
    def for_inference(cls, model):
        cls.calls.append(("for_inference", type(model).__name__))
        return model


@pytest.fixture()
def fake_unsloth(monkeypatch):
    module = types.ModuleType("unsloth")
    module.FastLanguageModel = FakeFastLanguageModel
    FakeFastLanguageModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", module)
    return FakeFastLanguageModel.calls


def test_load_unsloth_asks_for_4bit_loading(fake_unsloth, tiny_model_dir):
    from shared.unsloth_backend import load_unsloth

    cfg = ModelConfig(name=str(tiny_model_dir), chat_template="chatml", quantization="4bit", max_length=192)
    _, tokenizer, fmt = load_unsloth(cfg, "local", str(tiny_model_dir), torch.bfloat16)
    name, where, kw = fake_unsloth[0]
    assert (name, where) == ("from_pretrained", str(tiny_model_dir))
    assert kw["load_in_4bit"] is True and kw["load_in_8bit"] is False
    # Unsloth cuts inputs (at generation too) to max_seq_length: the model's context (512), not max_length
    assert kw["max_seq_length"] == 512 and kw["dtype"] == torch.bfloat16
    assert fmt.family == "chatml" and tokenizer.pad_token_id != tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_training_and_generation_through_the_unsloth_path(fake_unsloth, monkeypatch, tiny_model_dir, pairs_file,
                                                          tmp_path):
    """train() with backend unsloth: Unsloth loads the model and adds the LoRA adapter with the run's settings
    (no peft_config for the trainer); load_run switches the model to Unsloth's inference mode."""
    from apps.translator.task import TASK
    from shared.generate import load_run
    from shared.train import sft_config, train

    monkeypatch.setattr(models, "resolve_backend", lambda cfg: "unsloth")
    cfg = resolve(cli={"model.name": str(tiny_model_dir), "model.chat_template": "chatml", "model.dtype": "float32",
                       "data.train": str(pairs_file), "data.valid_fraction": 0.1, "train.max_steps": 2,
                       "train.batch_size": 4, "train.bf16": "false", "train.gradient_checkpointing": "true",
                       "train.seed": 7, "lora.r": 4, "lora.alpha": 8, "lora.dropout": 0.0,
                       "lora.target_modules": ["q_proj", "v_proj"], "output.dir": str(tmp_path / "run")})
    args = sft_config(cfg, tmp_path / "x", False)
    assert args.gradient_checkpointing is False  # Unsloth checkpoints itself
    assert args.padding_free is False and args.packing is False  # what Unsloth's patches would switch on
    run = train(TASK, cfg, tmp_path / "run", "test")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    peft_call = [c for c in fake_unsloth if c[0] == "get_peft_model"]
    assert len(peft_call) == 1
    assert peft_call[0][1] == {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                               "bias": "none", "use_rslora": False, "use_gradient_checkpointing": "unsloth",
                               "random_state": 7}
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == 4

    from shared import runs
    load_run(runs.Run.load(run))
    assert fake_unsloth[-1] == ("for_inference", "PeftModelForCausalLM")


def test_all_linear_is_spelt_out_for_unsloth(fake_unsloth, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from shared.unsloth_backend import add_lora

    cfg = resolve(cli={"model.name": str(tiny_model_dir), "lora.target_modules": "all-linear"})
    add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg)
    assert fake_unsloth[-1][1]["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                     "up_proj", "v_proj"]
    assert fake_unsloth[-1][1]["use_gradient_checkpointing"] is False
