"""Run configuration: dataclasses with help texts, loaded from YAML, overridden from the command line.

Precedence, lowest first: dataclass defaults < YAML file < command-line options.
Command-line overrides take either form: `--lora.r 32` or `--set lora.r=32`.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


PROJECT_ROOT = Path(__file__).resolve().parents[1]  # shipped configs name data files relative to it


class ConfigError(ValueError):
    """A config problem the user can fix; the message says what and where."""


def _f(default: Any, help: str, choices: tuple | None = None):
    """A dataclass field with a help text (and optional allowed values)."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name: str = _f("gemma3-270m", "Registry name (see shared/models.py), local folder, .gguf file or hub id.")
    backend: str = _f("auto", "Model backend; auto = unsloth on CUDA when installed, else transformers.",
                      ("auto", "transformers", "unsloth"))
    quantization: str = _f("none", "Load the frozen base in 4-bit NF4 (QLoRA) or 8-bit via bitsandbytes.",
                           ("none", "4bit", "8bit"))
    dtype: str = _f("auto", "Weight dtype; auto = bfloat16 when the device does bf16 fast, else float32.",
                    ("auto", "bfloat16", "float16", "float32"))
    chat_template: str = _f("", "Chat format family to force (phi3, llama3, gemma, chatml); empty = from registry.")
    trust_remote_code: bool = _f(False, "Allow model code from the model folder/hub to run. Off unless you ask.")
    max_length: int = _f(256, "Longest training example in tokens; longer rows are dropped and counted.")


@dataclass
class LoraSettings:
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA alpha (scaling = alpha / r).")
    dropout: float = _f(0.05, "Dropout on the LoRA branch.")
    target_modules: list = _f([], "Module names to adapt; empty = the model's defaults from the registry; "
                                  "'all-linear' = every linear layer.")


@dataclass
class TrainSettings:
    epochs: float = _f(1.0, "Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = _f(0, "Stop after this many optimizer steps (0 = use epochs).")
    batch_size: int = _f(8, "Examples per forward pass, in all: several processes (accelerate launch) split it "
                            "evenly between them.")
    grad_accum: int = _f(1, "Gradient accumulation steps (examples per optimizer step = batch_size x grad_accum, "
                            "whatever the number of processes).")
    lr: float = _f(2e-4, "Peak learning rate.")
    scheduler: str = _f("linear", "Learning-rate schedule.", ("linear", "cosine", "constant", "constant_with_warmup"))
    warmup_ratio: float = _f(0.05, "Fraction of steps spent warming up the learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    optim: str = _f("adamw_torch", "Optimizer name as in transformers (adamw_torch, paged_adamw_8bit, ...).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    seed: int = _f(42, "Random seed for data order, LoRA init and dropout.")
    bf16: str = _f("auto", "bf16 mixed precision: auto = on where the device does bf16 fast.", ("auto", "true", "false"))
    gradient_checkpointing: bool = _f(False, "Trade compute for memory (recommended on GPU for 8B models).")
    group_by_length: bool = _f(True, "Batch examples of similar length together (less padding, faster).")
    logging_steps: int = _f(5, "Log loss every N steps.")
    save_steps: int = _f(50, "Save a resumable checkpoint every N steps.")
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.")
    eval_steps: int = _f(0, "Evaluate loss on the validation split every N steps (0 = only at the end).")


@dataclass
class DataSettings:
    train: str = _f("", "Training data: JSONL, CSV, TSV file or Hugging Face dataset id.")
    valid: str = _f("", "Validation data; empty = split valid_fraction off the training data.")
    test: str = _f("", "Test data used by evaluate when --data is not given.")
    limit: int = _f(0, "Use only the first N training rows (0 = all).")
    valid_fraction: float = _f(0.05, "Fraction held out for validation when no valid file is given.")
    drop_duplicates: bool = _f(True, "Drop exact duplicate rows (counted in the data report).")


@dataclass
class GenerateSettings:
    max_new_tokens: int = _f(128, "Upper bound on generated tokens.")
    do_sample: bool = _f(False, "Sample instead of greedy decoding.")
    temperature: float = _f(0.7, "Sampling temperature (with do_sample).")
    top_p: float = _f(0.9, "Nucleus sampling (with do_sample).")
    top_k: int = _f(50, "Top-k sampling (with do_sample).")
    repetition_penalty: float = _f(1.0, "Penalty >1 discourages repeating tokens.")
    no_repeat_ngram_size: int = _f(0, "Forbid repeating n-grams of this size (0 = off).")
    batch_size: int = _f(16, "Prompts per generation batch.")


@dataclass
class OutputSettings:
    dir: str = _f("", "Run folder; empty = a new folder under runs/<product>/.")
    runs_root: str = _f("runs", "Where new run folders are created.")


@dataclass
class RunConfig:
    profile: str = _f("auto", "Hardware profile: auto picks gpu when CUDA is available, else cpu.",
                      ("auto", "cpu", "gpu"))
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    data: DataSettings = field(default_factory=DataSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    output: OutputSettings = field(default_factory=OutputSettings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {name: t for name, t in hints.items() if dataclasses.is_dataclass(t)}


SECTIONS = _sections()


def describe_keys() -> list[str]:
    """Every settable key as 'section.field', for error messages and --help."""
    keys = ["profile"]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _field_of(key: str) -> tuple[Any, dataclasses.Field]:
    parts = key.split(".")
    if len(parts) == 1 and parts[0] == "profile":
        return RunConfig, {f.name: f for f in dataclasses.fields(RunConfig)}["profile"]
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key '{key}'. Sections: {', '.join(SECTIONS)}. "
                          f"Valid keys: {', '.join(describe_keys())}")
    cls = SECTIONS[parts[0]]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if parts[1] not in fields:
        raise ConfigError(f"unknown config key '{key}'. Valid keys in '{parts[0]}': {', '.join(fields)}")
    return cls, fields[parts[1]]


def coerce(key: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, or raise ConfigError naming the key."""
    cls, f = _field_of(key)
    ftype = typing.get_type_hints(cls)[f.name]
    try:
        if ftype is bool:
            if isinstance(value, bool):
                out = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                out = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                out = False
            else:
                raise ValueError
        elif ftype is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif ftype is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        elif ftype is list:
            if isinstance(value, str):
                out = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                out = [str(v) for v in value]
            else:
                raise ValueError
        else:
            if isinstance(value, (dict, list)):
                raise ValueError
            out = "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}' expects {ftype.__name__}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices and out not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got {out!r}")
    return out


def apply(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Set flat 'section.field' keys on cfg (in place) after type checks; returns cfg."""
    for key, value in overrides.items():
        value = coerce(key, value)
        if key == "profile":
            cfg.profile = value
        else:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, value)
    return cfg


def flatten(tree: dict, source: str) -> dict[str, Any]:
    """Turn {'lora': {'r': 8}} into {'lora.r': 8}; unknown shapes raise ConfigError naming the source."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{source}: unknown section '{key}'. Sections: {', '.join(SECTIONS)}")
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[str(key)] = value
    return flat


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    flat = flatten(tree, str(path))
    for key, value in flat.items():  # validate now so the error names the file
        try:
            coerce(key, value)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return flat


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse ['--lora.r', '32', '--set', 'train.lr=1e-4', '--model.trust_remote_code'] into flat overrides."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--set":
            if i + 1 >= len(args) or "=" not in args[i + 1]:
                raise ConfigError("--set expects section.field=value, e.g. --set lora.r=32")
            key, value = args[i + 1].split("=", 1)
            out[key] = value
            i += 2
            continue
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}'")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 2
        else:
            value = "true"  # a bare flag sets a boolean
            i += 1
        key = key.replace("-", "_")  # --train.save-steps and --train.save_steps mean the same
        out[key] = value
    for key, value in out.items():
        coerce(key, value)
    return out


def resolve(defaults: dict[str, Any] | None = None, yaml_path: str | Path | None = None,
            cli: dict[str, Any] | None = None) -> RunConfig:
    """Build the run config: dataclass defaults < product defaults < YAML file < command line."""
    cfg = RunConfig()
    apply(cfg, defaults or {})
    if yaml_path:
        apply(cfg, load_yaml(yaml_path))
    apply(cfg, cli or {})
    return cfg


def from_dict(tree: dict) -> RunConfig:
    """Rebuild a RunConfig saved with to_dict() (for --resume and evaluation)."""
    return apply(RunConfig(), flatten(tree, "run.json"))


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


def anchor_data_paths(cfg: RunConfig) -> RunConfig:
    """A relative data path that does not exist from the current folder but does in the project (as in the
    shipped configs) is made absolute, so every command works from any folder."""
    for key in ("train", "valid", "test"):
        value = getattr(cfg.data, key)
        if value and not Path(value).is_absolute() and not Path(value).exists() and (PROJECT_ROOT / value).exists():
            setattr(cfg.data, key, str(PROJECT_ROOT / value))
    return cfg
