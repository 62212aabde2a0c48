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
    with pytest.raises(ConfigError, match=r"bad.yaml: line 2: config key 'train.max_steps' expects int"):
        load_yaml(bad)
    (tmp_path / "b2.yaml").write_text("trainer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="b2.yaml: line 1: unknown section 'trainer'"):
        load_yaml(tmp_path / "b2.yaml")
    (tmp_path / "b3.yaml").write_text("# mine\ntrain:\n  lr: 1.0e-4\nlora: 16\n")
    with pytest.raises(ConfigError, match="b3.yaml: line 4: section 'lora' must hold its keys indented below it "
                                          r"\(for example 'lora:' then '  r: ...'\), got 16"):
        load_yaml(tmp_path / "b3.yaml")


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_shipped_configs_load(profile):
    path = ROOT / "apps" / "translator" / "configs" / f"{profile}.yaml"
    assert path.read_text().startswith(f"# python -m apps.translator.train --profile {profile}")
    cfg = resolve(yaml_path=path)
    if profile == "gpu":  # the design card: Phi-3-mini QLoRA, NF4 + double quant (see models.py), r16/a32;
        # dtype auto = bf16 where the GPU has it in hardware, else fp16
        assert (cfg.model.name, cfg.model.quantization, cfg.model.dtype) == ("phi3-mini", "4bit", "auto")
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


# ---------------------------------------------------------------- values checked by type and range

def _numeric_fields():
    import dataclasses
    import typing

    from shared.config import SECTIONS

    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float) or f.metadata.get("item") in (int, float):
                yield f"{section}.{f.name}", f


def test_every_numeric_setting_declares_its_range():
    """A new int/float field cannot slip in without saying what it allows."""
    missing = [key for key, f in _numeric_fields() if not {"min", "gt", "max", "lt"} & f.metadata.keys()]
    assert missing == []


def test_every_default_is_inside_its_own_range():
    from shared.config import coerce

    cfg = RunConfig()
    for key, _ in _numeric_fields():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        assert coerce(key, value) == value


@pytest.mark.parametrize("key, value, message", [
    ("train.lr", -1, "config key 'train.lr' is -1.0; it must be in (0, 1]"),
    ("train.batch_size", 0, "config key 'train.batch_size' is 0; it must be >= 1"),
    ("lora.dropout", 2, "config key 'lora.dropout' is 2.0; it must be in [0, 1)"),
    ("generate.temperature", 0, "config key 'generate.temperature' is 0.0; it must be > 0"),
    ("data.weights", [1, -2], "config key 'data.weights' is [1.0, -2.0]; every value must be >= 0"),
    ("train.lr", float("nan"), "config key 'train.lr' must be a finite number, got nan"),
    ("train.epochs", "inf", "config key 'train.epochs' must be a finite number, got 'inf'"),
    ("train.max_steps", 2.5, "config key 'train.max_steps' expects int, got 2.5"),
    ("lora.target_modules", {"q": 1}, "config key 'lora.target_modules' expects a list of str"),
])
def test_range_errors_name_key_value_and_range(key, value, message):
    from shared.config import coerce

    with pytest.raises(ConfigError) as e:
        coerce(key, value)
    assert str(e.value) == message or str(e.value).startswith(message)


def test_new_fields_have_help_defaults_and_checks():
    import dataclasses

    from shared.config import DataSettings, TrainSettings

    cfg = RunConfig()
    assert cfg.train.report_to == "none" and cfg.data.weights == []
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)} | {f.name: f for f in dataclasses.fields(DataSettings)}
    assert fields["report_to"].metadata["choices"] == ("none", "tensorboard", "wandb")
    assert "tensorboard logs go into the run folder" in fields["report_to"].metadata["help"]
    assert fields["weights"].metadata["help"].startswith("Sampling weight per --data file when several are mixed")
    assert resolve(cli={"data.train": "a.jsonl,b.csv", "data.weights": "2,0.5"}).data.weights == [2.0, 0.5]
    assert resolve(cli={"data.train": "a.jsonl,b.csv", "data.weights": [2, 1]}).data.weights == [2.0, 1.0]
    assert resolve(cli={"train.report_to": "tensorboard"}).train.report_to == "tensorboard"


def test_yaml_booleans_are_read_as_the_choice_words(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  bf16: true\n")  # YAML reads this as a bool, the field takes "true"
    assert resolve(yaml_path=path).train.bf16 == "true"


def test_a_saved_run_is_read_without_the_library_checks(monkeypatch):
    """A run trained with an optimizer this transformers no longer knows still loads for evaluation."""
    from shared import config

    monkeypatch.setattr(config, "_optimizer_names", lambda: ("adamw_torch",))
    tree = RunConfig().to_dict()
    tree["train"]["optim"] = "paged_adamw_8bit"
    assert from_dict(tree).train.optim == "paged_adamw_8bit"
    with pytest.raises(ConfigError, match="'paged_adamw_8bit' is not an optimizer transformers knows"):
        resolve(cli={"train.optim": "paged_adamw_8bit"})


def test_an_old_run_json_without_the_new_keys_loads():
    tree = RunConfig().to_dict()
    del tree["train"]["report_to"], tree["data"]["weights"]
    cfg = from_dict(tree)
    assert cfg.train.report_to == "none" and cfg.data.weights == []


def test_a_config_file_with_a_bom_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbftrain:\n  lr: 0.001\n")
    assert resolve(yaml_path=path).train.lr == 0.001


def test_each_file_of_a_list_is_anchored_to_the_project(tmp_path, monkeypatch):
    from shared.config import anchor_data_paths

    monkeypatch.chdir(tmp_path)  # elsewhere: the shipped relative path does not exist from here
    other = tmp_path / "mine.jsonl"
    other.write_text("{}\n")
    cfg = resolve(cli={"data.train": f"data/translator/train.jsonl,{other}"})
    anchor_data_paths(cfg)
    assert cfg.data.train == f"{ROOT / 'data/translator/train.jsonl'},{other}"


def test_a_key_given_twice_in_yaml_is_an_error_and_an_empty_section_is_none(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  lr: 1.0e-4\ntrain:\n  epochs: 2\n")  # PyYAML alone keeps only the second
    with pytest.raises(ConfigError, match=r"'train' is given twice at line 3"):
        load_yaml(twice)
    empty = tmp_path / "empty.yaml"
    empty.write_text("lora:\n  # r: 8\ntrain:\n  lr: 1.0e-4\n")
    assert load_yaml(empty) == {"train.lr": 1e-4}


def test_data_weights_are_bounded():
    with pytest.raises(ConfigError, match="at most 1,000"):
        resolve(cli={"data.train": "a.jsonl,b.jsonl", "data.weights": "1e30,1"})


def test_a_tilde_is_the_home_folder_for_runs(tmp_path, monkeypatch):
    """A quoted ~ (YAML, FT_RUNS_DIR='~/x') must not make a folder named ~: transformers would write the
    checkpoints under the real home folder and the rest of the run beside them in ./~."""
    from apps.translator.task import TASK
    from shared import runs
    from shared.cli import build_config, train_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert runs.runs_root("~/r") == tmp_path / "r"
    args, rest = train_parser(TASK).parse_known_args(["--output-dir", "~/od", "--output.runs_root", "~/r"])
    cfg, run_dir, _ = build_config(TASK, args, rest)
    assert run_dir == tmp_path / "od" and cfg.output.dir == str(tmp_path / "od")
    assert cfg.output.runs_root == str(tmp_path / "r")


def test_data_train_holds_out_its_own_split_as_data_does(tmp_path):
    """`--data.train X` (or --set data.train=X) is `--data X`: the validation rows come from X, not from the
    shipped validation file of another dataset."""
    from apps.translator.task import TASK
    from shared.cli import build_config, train_parser

    for argv in (["--data", "x.jsonl"], ["--data.train", "x.jsonl"], ["--set", "data.train=x.jsonl"]):
        args, rest = train_parser(TASK).parse_known_args([*argv, "--output-dir", str(tmp_path / "r")])
        assert build_config(TASK, args, rest)[0].data.valid == "", argv
