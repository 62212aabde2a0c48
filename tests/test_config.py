import pytest

from shared.config import ConfigError, RunConfig, from_dict, load_yaml, parse_overrides, resolve

from .conftest import ROOT


def test_precedence_defaults_then_yaml_then_cli(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("lora:\n  r: 8\n  alpha: 16\ntrain:\n  lr: 0.001\n")
    cfg = resolve(yaml_path=yaml_file, cli=parse_overrides(["--lora.r", "32", "--set", "train.lr=5e-5"]))
    assert cfg.lora.r == 32  # command line beats YAML
    assert cfg.lora.alpha == 16  # YAML beats default
    assert cfg.train.lr == 5e-5
    assert cfg.lora.dropout == RunConfig().lora.dropout  # untouched default


def test_cli_forms_and_types():
    flat = parse_overrides(["--train.save-steps", "50", "--train.gradient_checkpointing",
                            "--lora.target_modules", "q_proj,v_proj", "--model.name=phi3-mini"])
    cfg = resolve(cli=flat)
    assert cfg.train.save_steps == 50 and cfg.train.gradient_checkpointing is True
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.model.name == "phi3-mini"


def test_unknown_key_lists_valid_choices():
    with pytest.raises(ConfigError) as e:
        parse_overrides(["--lora.rank", "8"])
    assert "lora.rank" in str(e.value) and "r, alpha, dropout" in str(e.value)
    with pytest.raises(ConfigError, match="Sections: model, lora"):
        parse_overrides(["--optimizer.lr", "1"])


@pytest.mark.parametrize("args, message", [
    (["--lora.r", "abc"], "expects int"),
    (["--train.lr", "fast"], "expects float"),
    (["--model.quantization", "3bit"], "must be one of none, 4bit, 8bit"),
    (["--train.group_by_length", "maybe"], "expects bool"),
])
def test_wrong_types_are_named(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(args)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config key 'train.max_steps' expects int"):
        load_yaml(bad)
    (tmp_path / "b2.yaml").write_text("trainer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'trainer'"):
        load_yaml(tmp_path / "b2.yaml")


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_shipped_configs_load(profile):
    path = ROOT / "apps" / "translator" / "configs" / f"{profile}.yaml"
    assert path.read_text().startswith(f"# python -m apps.translator.train --profile {profile}")
    cfg = resolve(yaml_path=path)
    if profile == "gpu":  # the design card: Phi-3-mini QLoRA, NF4 + double quant (see models.py), bf16, r16/a32
        assert (cfg.model.name, cfg.model.quantization, cfg.model.dtype) == ("phi3-mini", "4bit", "bfloat16")
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.05)
        assert set(cfg.lora.target_modules) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    else:
        assert cfg.model.name == "gemma3-270m"


def test_round_trip_through_run_json():
    cfg = resolve(cli={"lora.r": 4, "data.train": "x.jsonl"})
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_price_configs_load(profile):
    path = ROOT / "apps" / "price_predictor" / "configs" / f"{profile}.yaml"
    assert path.read_text().startswith(f"# python -m apps.price_predictor.train --profile {profile}")
    cfg = resolve(yaml_path=path)
    if profile == "gpu":  # as in the course: Llama 3.1 8B, 4-bit, LoRA r32/a64/d0.1 on attention, lr 1e-4 cosine
        assert (cfg.model.name, cfg.model.quantization) == ("llama3.1-8b", "4bit")
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (32, 64, 0.1)
        assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert (cfg.train.lr, cfg.train.scheduler, cfg.train.warmup_ratio) == (1e-4, "cosine", 0.03)
