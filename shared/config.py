"""Run configuration: dataclasses with help texts, loaded from YAML, overridden from the command line.

Precedence, lowest first: dataclass defaults < YAML file < command-line options.
Command-line overrides take either form: `--lora.r 32` or `--set lora.r=32`.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # shipped configs name data files relative to it


class ConfigError(ValueError):
    """A config problem the user can fix; the message says what and where."""


def _f(default: Any, help: str, choices: tuple | None = None, *, min: float | None = None,
       max: float | None = None, gt: float | None = None, lt: float | None = None, item: type | None = None,
       check: Callable[[Any], str | None] | None = None):
    """A dataclass field with a help text and what values it allows: choices, a numeric range (min <= value,
    value <= max, gt < value, value < lt; for a list, each item), the item type of a list, and `check`, a
    function returning a problem (or None) for checks that need a library (run before training, not when a
    saved run is read back)."""
    meta: dict[str, Any] = {"help": help}
    for key, value in (("choices", choices), ("min", min), ("max", max), ("gt", gt), ("lt", lt),
                       ("item", item), ("check", check)):
        if value is not None:
            meta[key] = value
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@functools.lru_cache(maxsize=1)
def _optimizer_names() -> tuple[str, ...]:
    # imported here, on first use: it pulls in torch
    from transformers.training_args import OptimizerNames

    return tuple(o.value for o in OptimizerNames)


def _known_optimizer(name: str) -> str | None:
    names = _optimizer_names()
    if name in names:
        return None
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"is not an optimizer transformers knows; {hint}choices: {', '.join(names)}"


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
    max_length: int = _f(256, "Longest training example in tokens; longer rows are dropped and counted.", min=1)


@dataclass
class LoraSettings:
    r: int = _f(16, "LoRA rank.", min=1)
    alpha: int = _f(32, "LoRA alpha (scaling = alpha / r).", min=1)
    dropout: float = _f(0.05, "Dropout on the LoRA branch.", min=0, lt=1)
    target_modules: list = _f([], "Module names to adapt; empty = the model's defaults from the registry; "
                                  "'all-linear' = every linear layer.")
    use_rslora: bool = _f(False, "rsLoRA: scale the adapter by alpha/sqrt(r) instead of alpha/r (steadier at high r).")
    use_dora: bool = _f(False, "DoRA: learn a magnitude per output and a LoRA direction (slower steps).")
    init: str = _f("default", "Adapter initialisation: default (B = 0), pissa (principal singular vectors of "
                              "the base weight, fast randomized SVD), gaussian.", ("default", "pissa", "gaussian"))


@dataclass
class TrainSettings:
    epochs: float = _f(1.0, "Passes over the training data (ignored when max_steps > 0).", min=0)
    max_steps: int = _f(0, "Stop after this many optimizer steps (0 = use epochs).", min=0)
    batch_size: int = _f(8, "Examples per forward pass, in all: several processes (accelerate launch) split it "
                            "evenly between them.", min=1)
    grad_accum: int = _f(1, "Gradient accumulation steps (examples per optimizer step = batch_size x grad_accum, "
                            "whatever the number of processes).", min=1)
    lr: float = _f(2e-4, "Peak learning rate.", gt=0, max=1)
    scheduler: str = _f("linear", "Learning-rate schedule.", ("linear", "cosine", "constant", "constant_with_warmup"))
    warmup_ratio: float = _f(0.05, "Fraction of steps spent warming up the learning rate.", min=0, lt=1)
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0, max=1)
    optim: str = _f("adamw_torch", "Optimizer name as in transformers (adamw_torch, paged_adamw_8bit, ...).",
                     check=_known_optimizer)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = no clipping).", min=0)
    seed: int = _f(42, "Random seed for data order, LoRA init and dropout.", min=0, max=2**32 - 1)  # numpy's range
    bf16: str = _f("auto", "bf16 mixed precision: auto = on where the device does bf16 fast.", ("auto", "true", "false"))
    gradient_checkpointing: bool = _f(False, "Trade compute for memory (recommended on GPU for 8B models).")
    group_by_length: bool = _f(True, "Batch examples of similar length together (less padding, faster).")
    output_vocab: str = _f("full", "Output vocabulary of the loss and of decoding: full, or answers = the tokens "
                                   "the training answers can be written with (shared/vocab.py); a smaller output "
                                   "layer, faster training and generation.", ("full", "answers"))
    share_prefix: bool = _f(True, "Compute the tokens every example of a batch starts with (system prompt, chat "
                                  "header) once per batch instead of once per row; same loss and gradients. "
                                  "Off under gradient checkpointing.")
    lean_lora: bool = _f(True, "Run each LoRA layer as one forward and one backward (shared/lean.py:install_lora) "
                               "instead of PEFT's, which copies every layer's input twice; same values up to "
                               "rounding, a faster CPU step. Plain LoRA on a CPU only; others keep PEFT's.")
    lean_attention: bool = _f(True, "Train with shared/attention.py's attention on a CPU (one float32 score matmul "
                                    "per key/value head; SDPA's kernel is slow at these sizes); evaluation and "
                                    "generation keep SDPA.")
    saved_activations: str = _f("auto", "Dtype of the activations kept for the backward pass: auto = bfloat16 "
                                        "where the model computes in float32 on a CPU (half the memory; the "
                                        "gradients of bf16 mixed precision), else as computed (shared/lean.py).",
                                ("auto", "computed", "bfloat16"))
    logging_steps: int = _f(5, "Log loss every N steps.", min=1)
    save_steps: int = _f(50, "Save a resumable checkpoint every N steps.", min=1)
    # at least 1: 0 means "keep every checkpoint" to transformers, which the pre-flight disk check cannot size
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.", min=1)
    eval_steps: int = _f(0, "Evaluate loss on the validation split every N steps (0 = only at the end).", min=0)
    report_to: str = _f("none", "Experiment tracking as transformers names it; tensorboard logs go into the run "
                                "folder.", ("none", "tensorboard", "wandb"))
    metric_samples: int = _f(0, "Validation rows generated on at every evaluation (eval_steps) to score the "
                                "product's own metric (chrF++, MAE) next to the loss; 0 = loss only.", min=0)
    keep: str = _f("last", "Which weights become the run's adapter: the last step's, or the checkpoint with the "
                           "best validation metric (needs metric_samples) or loss (both need eval_steps, and "
                           "save_steps a multiple of it).", ("last", "best_metric", "best_loss"))
    early_stopping: int = _f(0, "Stop after this many evaluations without improvement of what `keep` watches "
                                "(0 = never).", min=0)
    method: str = _f("lora", "What trains: lora = a LoRA adapter (the lora.* settings), written to adapter/; full = "
                             "every weight of the transformer body, embeddings and output layer frozen, written "
                             "to model/ as a transformers model (small models: Adam keeps 12 bytes per weight; "
                             "use a lower lr, e.g. 5e-5).", ("lora", "full"))
    neftune_alpha: float = _f(0.0, "NEFTune: uniform noise of this scale on the input embeddings while training "
                                   "(5 in the paper; 0 = off).", min=0)


@dataclass
class DataSettings:
    train: str = _f("", "Training data: JSONL, JSON, CSV, TSV file or Hugging Face dataset id; several, separated "
                        "by commas, are mixed (see weights).")
    valid: str = _f("", "Validation data; empty = split valid_fraction off the training data.")
    test: str = _f("", "Test data used by evaluate when --data is not given.")
    limit: int = _f(0, "Use only the first N training rows of each file (0 = all).", min=0)
    valid_fraction: float = _f(0.05, "Fraction held out for validation when no valid file is given.", min=0, lt=1)
    drop_duplicates: bool = _f(True, "Drop exact duplicate rows (counted in the data report).")
    weights: list = _f([], "Sampling weight per --data file when several are mixed; empty = all rows of every "
                           "file. A weight w uses each row of its file w times per epoch (2 = twice, 0.5 = a "
                           "seeded half of them, 0 = none).", item=float, min=0)


@dataclass
class GenerateSettings:
    max_new_tokens: int = _f(128, "Upper bound on generated tokens.", min=1)
    do_sample: bool = _f(False, "Sample instead of greedy decoding.")
    temperature: float = _f(0.7, "Sampling temperature (with do_sample).", gt=0)
    top_p: float = _f(0.9, "Nucleus sampling (with do_sample).", gt=0, max=1)
    top_k: int = _f(50, "Top-k sampling (with do_sample; 0 = off).", min=0)
    repetition_penalty: float = _f(1.0, "Penalty >1 discourages repeating tokens.", gt=0)
    no_repeat_ngram_size: int = _f(0, "Forbid repeating n-grams of this size (0 = off).", min=0)
    num_beams: int = _f(1, "Beam search width for batch decoding (evaluate); 1 = greedy or sampling. Each prompt "
                           "is read once and its cache shared by the beams.", min=1)
    beam_pick: str = _f("score", "Which of the beams' answers to keep: score = the most likely (Hugging Face's "
                                 "pick with length_penalty=0), length = the most likely per token, consensus = "
                                 "the one closest to the others in chrF++ (minimum Bayes risk): with 4 beams, +2.0 "
                                 "chrF++ over greedy on the translator's test, +1.5 on news (docs/results.md, decoding "
                                 "options).",
                         ("score", "length", "consensus"))
    first_line: bool = _f(False, "End an answer at its first line break after some text (for products that keep "
                                 "only the first line: what is cut would be thrown away).")
    loop_guard: bool = _f(False, "End an answer whose last tokens repeat in a loop, keeping one copy of the "
                                 "repeated part (shared/generate.py:loop_start says what counts as a loop).")
    batch_size: int = _f(16, "Prompts per generation batch.", min=1)


@dataclass
class OutputSettings:
    dir: str = _f("", "Run folder; empty = a new folder under runs/<product>/.")
    runs_root: str = _f("", "Where runs live; empty = $FT_RUNS_DIR, else ./runs (shared/runs.py:runs_root).")


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


def _scalar(ftype: type, value: Any) -> Any:
    """value as a bool, int, float or str; ValueError/TypeError when it is not one."""
    if ftype is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError
    if ftype is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if ftype is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if isinstance(value, (dict, list)):
        raise TypeError
    if isinstance(value, bool):  # YAML reads `bf16: true` as a bool; the choices are the words
        return str(value).lower()
    return "" if value is None else str(value)


def _convert(ftype: type, item: type, value: Any) -> Any:
    if ftype is list:
        if isinstance(value, str):
            parts = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise ValueError
        return [_scalar(item, v) for v in parts]
    return _scalar(ftype, value)


def _range_text(meta: dict) -> str:
    """The allowed range in words: '>= 1', 'in [0, 1)', 'in (0, 1]'."""
    low = ("[", meta["min"]) if "min" in meta else ("(", meta["gt"]) if "gt" in meta else None
    high = (meta["max"], "]") if "max" in meta else (meta["lt"], ")") if "lt" in meta else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"{'<=' if high[1] == ']' else '<'} {high[0]}" if high else ""


def _in_range(meta: dict, x: float) -> bool:
    return not (("min" in meta and x < meta["min"]) or ("gt" in meta and x <= meta["gt"])
                or ("max" in meta and x > meta["max"]) or ("lt" in meta and x >= meta["lt"]))


def _check_value(key: str, meta: dict, out: Any, deep: bool) -> None:
    choices = meta.get("choices")
    if choices and out not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got {out!r}")
    rule = _range_text(meta)
    if rule:
        items = out if isinstance(out, list) else [out]
        bad = [x for x in items if not _in_range(meta, x)]
        if bad:
            what = "every value" if isinstance(out, list) else "it"
            raise ConfigError(f"config key '{key}' is {out!r}; {what} must be {rule}")
    if deep and meta.get("check"):
        problem = meta["check"](out)
        if problem:
            raise ConfigError(f"config key '{key}': {out!r} {problem}")


def coerce(key: str, value: Any, deep: bool = False) -> Any:
    """Convert a YAML or command-line value to the field's type and check it against the field's choices and
    range, or raise ConfigError naming the key, the value and what is allowed. deep: also run the field's
    library-backed check (for values a user typed; a saved run's config is not re-checked)."""
    cls, f = _field_of(key)
    ftype = typing.get_type_hints(cls)[f.name]
    item = f.metadata.get("item", str)
    try:
        out = _convert(ftype, item, value)
    except (TypeError, ValueError, OverflowError):
        expects = f"a list of {item.__name__}" if ftype is list else ftype.__name__
        raise ConfigError(f"config key '{key}' expects {expects}, got {value!r}") from None
    # nan or inf is never a sensible setting, and nan would pass every range comparison below
    if any(isinstance(x, float) and not math.isfinite(x) for x in (out if isinstance(out, list) else [out])):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    _check_value(key, f.metadata, out, deep)
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


def flatten(tree: dict, source: str, lines: dict[str, int] | None = None) -> dict[str, Any]:
    """Turn {'lora': {'r': 8}} into {'lora.r': 8}; unknown shapes raise ConfigError naming the source (and the
    line, given `lines` from `_parse_yaml`)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    lines = lines or {}
    flat = {}
    for key, value in tree.items():
        where = f"{source}: line {lines[key]}" if key in lines else source
        if value is None and key in SECTIONS:  # `lora:` with all its keys commented out
            continue
        if key in SECTIONS and not isinstance(value, dict):  # `lora: 16` would otherwise be an "unknown key"
            raise ConfigError(f"{where}: section '{key}' must hold its keys indented below it (for example "
                              f"'{key}:' then '  {dataclasses.fields(SECTIONS[key])[0].name}: ...'), got {value!r}")
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{where}: unknown section '{key}'. Sections: {', '.join(SECTIONS)}")
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[str(key)] = value
    return flat


def _read_config_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
                          "re-save the config file as UTF-8") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last one,
    so `train:` written twice would drop every setting of the first without a word."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key (a list): PyYAML's own check below names it
                pass
        return super().construct_mapping(node, deep)


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[str, int]]:
    """(the YAML's value, the line of each top-level key and each 'section.key'), from one parse."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), _key_lines(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({problem}{where})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    finally:
        loader.dispose()


def _key_lines(root) -> dict[str, int]:
    """The line of each top-level key and each 'section.key' of a composed YAML document, so an error about a
    value can point at it."""
    lines: dict[str, int] = {}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            lines.setdefault(str(key.value), key.start_mark.line + 1)
            if isinstance(value, yaml.MappingNode):
                for sub, _ in value.value:
                    lines.setdefault(f"{key.value}.{sub.value}", sub.start_mark.line + 1)
    return lines


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; pass a YAML file")
    if not path.is_file():
        raise ConfigError(f"--config {path} is not a regular file (a pipe?); save the config to a file and pass "
                          "that" if path.exists() else f"config file not found: {path}")
    tree, lines = _parse_yaml(path, _read_config_text(path))
    flat = flatten(tree if tree is not None else {}, str(path), lines)
    for key, value in flat.items():  # validate now so the error names the file and the line
        try:
            coerce(key, value, deep=True)
        except ConfigError as e:
            raise ConfigError(f"{path}: line {lines[key]}: {e}" if key in lines else f"{path}: {e}") from None
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
        coerce(key, value, deep=True)
    return out


def resolve(defaults: dict[str, Any] | None = None, yaml_path: str | Path | None = None,
            cli: dict[str, Any] | None = None) -> RunConfig:
    """Build the run config: dataclass defaults < product defaults < YAML file < command line."""
    cfg = RunConfig()
    apply(cfg, defaults or {})
    if yaml_path:
        apply(cfg, load_yaml(yaml_path))
    apply(cfg, cli or {})
    return validate(cfg)


def validate(cfg: RunConfig) -> RunConfig:
    """Checks that involve several keys or a library, on the final config (after defaults, YAML and command
    line), before anything slow starts. Returns cfg; raises a one-line ConfigError."""
    from .models import keep_bitsandbytes_out

    keep_bitsandbytes_out(cfg.model, cfg.train.optim)  # first: the optimizer check imports peft, which imports it
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.metadata.get("check"):
                _check_value(f"{section}.{f.name}", {"check": f.metadata["check"]},
                             getattr(getattr(cfg, section), f.name), deep=True)
    t = cfg.train
    if t.max_steps == 0 and t.epochs <= 0:
        raise ConfigError(f"train.epochs is {t.epochs:g} and train.max_steps is 0: the run would train 0 steps; "
                          "set --epochs above 0 or --max-steps N")
    _check_weights(cfg.data)
    _check_keep(t)
    if cfg.lora.init == "pissa" and (cfg.lora.use_rslora or cfg.model.quantization != "none"):
        raise ConfigError("lora.init=pissa works on an unquantized base without rsLoRA (its adapter is saved as "
                          "a plain LoRA, which PEFT cannot do for rsLoRA); set lora.use_rslora false and "
                          "model.quantization none, or use lora.init default")
    _check_method(cfg)
    return cfg


def _check_method(cfg: RunConfig) -> None:
    if cfg.train.method != "full":
        return
    if cfg.model.quantization != "none":
        raise ConfigError(f"train.method=full trains the weights themselves, which a {cfg.model.quantization} base "
                          "cannot: set model.quantization none (QLoRA is train.method lora)")
    # The lora section (r, alpha, rsLoRA, DoRA, init) is not used, as with any option of a method not chosen: a
    # profile tuned for LoRA stays usable with --train.method full, and train logs that the section is ignored.


def _check_keep(t: TrainSettings) -> None:
    """Keeping the best checkpoint needs evaluations to compare and a checkpoint saved at each of them."""
    if t.keep == "last":
        if t.early_stopping:
            raise ConfigError("train.early_stopping needs train.keep best_metric or best_loss (what to watch)")
        return
    if t.eval_steps <= 0:
        raise ConfigError(f"train.keep={t.keep} needs evaluations during training: set train.eval_steps (e.g. "
                          f"{t.save_steps})")
    if t.save_steps % t.eval_steps:
        raise ConfigError(f"train.keep={t.keep}: train.save_steps ({t.save_steps}) must be a multiple of "
                          f"train.eval_steps ({t.eval_steps}), so that every evaluation has its checkpoint")
    if t.keep == "best_metric" and t.metric_samples <= 0:
        raise ConfigError("train.keep=best_metric needs train.metric_samples > 0 (validation rows to generate on)")


MAX_WEIGHT = 1000  # repeats of a file's rows per epoch; far more only fills memory with copies


def _check_weights(data: DataSettings) -> None:
    from .data import split_sources  # the data layer decides how a file list is written

    if not data.weights:
        return
    n = len(split_sources(data.train)) if data.train else 0
    if len(data.weights) != n:
        raise ConfigError(f"data.weights has {len(data.weights)} value(s) {data.weights} but data.train names {n} "
                          f"file(s) ({data.train or 'none'}); give one weight per file, in the same order")
    if not any(data.weights):
        raise ConfigError(f"data.weights are all 0 {data.weights}: no training row would be used")
    if max(data.weights) > MAX_WEIGHT:
        raise ConfigError(f"data.weights {data.weights}: a weight is how many times each row of its file is used "
                          f"per epoch; at most {MAX_WEIGHT:,}")


def from_dict(tree: dict) -> RunConfig:
    """Rebuild a RunConfig saved with to_dict() (for --resume and evaluation)."""
    return apply(RunConfig(), flatten(tree, "run.json"))


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


# What a run's checkpoints were made with: their weights' shapes and meaning (model, lora, method, output
# vocabulary), or the data order a resumed run skips through (data, batches, seed). --resume refuses a change
# to any of these; the rest (steps, epochs, logging, saving, evaluation, decoding) may change.
FIXED_ON_RESUME = ("profile", "model.", "lora.", "train.method", "train.output_vocab", "train.batch_size",
                   "train.grad_accum", "train.seed", "train.group_by_length", "data.train", "data.valid",
                   "data.limit", "data.valid_fraction", "data.drop_duplicates", "data.weights")


def changed_on_resume(before: RunConfig, after: RunConfig) -> list[str]:
    """'key: old -> new' for each FIXED_ON_RESUME key whose value differs."""
    old, new = flatten(before.to_dict(), "run"), flatten(after.to_dict(), "run")
    return [f"{key}: {old[key]!r} -> {new[key]!r}" for key in old
            if key.startswith(FIXED_ON_RESUME) and old[key] != new[key]]


def anchor_data_paths(cfg: RunConfig) -> RunConfig:
    """Relative data paths made absolute, so every command reads the same files from any folder: one that
    exists from the current folder is resolved there (a run records the file it trained on, not a name another
    folder may hold too), else one that exists in the project (the shipped configs' data/...) there. Each file
    of a comma-separated list on its own; a name that is no file (a hub dataset id) stays as it is."""
    from .data import split_sources

    for key in ("train", "valid", "test"):
        value = getattr(cfg.data, key)
        if value:
            setattr(cfg.data, key, ",".join(_anchored(part) for part in split_sources(value)))
    return cfg


def _anchored(value: str) -> str:
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if path.exists():
        return str(path.resolve())
    if (PROJECT_ROOT / value).exists():
        return str(PROJECT_ROOT / value)
    return value
