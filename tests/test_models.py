import json

import pytest

from shared.config import ConfigError, ModelConfig, resolve
from shared.models import REGISTRY, default_target_modules, resolve_backend, resolve_profile, resolve_source


def test_sources(tmp_path):
    assert resolve_source("gemma3-270m") == ("embedded", "gemma3-270m")
    assert resolve_source("phi3-mini") == ("hub", "microsoft/Phi-3-mini-4k-instruct")
    assert resolve_source("someone/some-model") == ("hub", "someone/some-model")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path / "m")) == ("local", str(tmp_path / "m"))
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_source(str(gguf)) == ("gguf", str(gguf))


def test_source_errors_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "missing.gguf"))
    (tmp_path / "adapter").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_source(str(tmp_path / "adapter"))


def test_profiles_and_backends_on_a_cpu_machine():
    assert resolve_profile("auto")[0] == "cpu" and "no CUDA" in resolve_profile("auto")[1]
    assert resolve_profile("cpu") == ("cpu", "asked for 'cpu'")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        resolve_profile("gpu")
    assert resolve_backend(ModelConfig()) == "transformers"
    with pytest.raises(ConfigError, match="backend 'unsloth' needs a CUDA GPU"):
        resolve_backend(ModelConfig(backend="unsloth"))


def test_registry_defaults():
    assert set(default_target_modules(ModelConfig(name="gemma3-270m"))) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert default_target_modules(ModelConfig(name="/some/folder")) == "all-linear"
    assert all(spec.chat_family in ("phi3", "llama3", "gemma", "chatml") for spec in REGISTRY.values())


def test_qlora_4bit_trains_on_cpu(tiny_model_dir, pairs_file, tmp_path):
    """The QLoRA path (bitsandbytes NF4 base + LoRA) runs on the CPU too."""
    from apps.translator.task import TASK
    from shared.models import load
    from shared.train import train

    cfg = resolve(cli={"model.name": str(tiny_model_dir), "model.chat_template": "chatml",
                       "model.quantization": "4bit", "data.train": str(pairs_file), "train.max_steps": 2,
                       "train.batch_size": 4, "train.logging_steps": 1, "train.bf16": "false",
                       "lora.target_modules": ["q_proj", "v_proj"], "output.dir": str(tmp_path / "run")})
    model, _, _ = load(cfg.model)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    run = train(TASK, cfg, tmp_path / "run", "test")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["config"]["model"]["quantization"] == "4bit"
    assert all(p["loss"] > 0 for p in record["loss_curve"] if "loss" in p)


@pytest.mark.slow
def test_embedded_cache_is_bf16_and_loads_without_conversion(gemma_dir):
    """The cache holds bf16 (what training and generation use), so a bf16 load maps the file as it is."""
    from safetensors import safe_open

    assert gemma_dir.name.endswith("-bf16")
    with safe_open(str(gemma_dir / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"BF16"}


@pytest.mark.parametrize("settings, kept_out", [({}, True), ({"model.quantization": "4bit"}, False)],
                         ids=["plain", "4bit"])
def test_a_command_that_needs_no_bitsandbytes_keeps_it_out(settings, kept_out):
    """A command's own process (fresh, as one started from the shell is) whose run does not quantize keeps
    bitsandbytes out, and peft and transformers then take it for not installed; one that quantizes gets it."""
    import subprocess
    import sys

    from .conftest import ROOT

    script = (
        "import sys, json\n"
        "from shared import models\n"
        "from shared.config import resolve\n"
        "models.one_run_process()\n"
        f"resolve(cli={settings!r})  # as a command's config is resolved\n"
        "kept = sys.modules.get('bitsandbytes', 'not imported') is None\n"
        "import peft.import_utils, transformers.trainer_utils\n"
        "from transformers.utils import is_bitsandbytes_available\n"
        "print(json.dumps([kept, sys.modules.get('bitsandbytes') is not None,\n"
        "                  peft.import_utils.is_bnb_available(), is_bitsandbytes_available()]))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    kept, loaded, peft_sees, transformers_sees = json.loads(done.stdout.splitlines()[-1])
    assert kept is kept_out
    assert loaded is peft_sees is transformers_sees is (not kept_out)


def test_a_process_that_is_not_one_commands_own_keeps_bitsandbytes():
    """A test session, a notebook or the demo server may load a quantized run later: nothing is kept out."""
    import sys

    from shared import models
    from shared.config import resolve

    before = sys.modules.get("bitsandbytes")
    cfg = resolve()
    assert models.keep_bitsandbytes_out(cfg.model, cfg.train.optim) is False
    assert sys.modules.get("bitsandbytes") is before
