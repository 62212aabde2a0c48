"""Write a merged Hugging Face model folder as one GGUF file, with the pinned `gguf` package (llama.cpp's own
gguf-py) and no llama.cpp checkout; and an Ollama Modelfile beside it.

    export(Path("exports/m"), Path("exports/m.gguf"), "q8_0", family="gemma", product="translator")
    # -> exports/m.gguf and exports/m.Modelfile; write_gguf() alone writes just the file

Architectures (config.json model_type -> GGUF architecture): gemma3_text -> gemma3, llama -> llama,
mistral -> llama (the separate-projection layout Unsloth gives Phi-3), phi3 -> phi3 (fused qkv and gate_up
kept fused), qwen2 -> qwen2. Anything else, and any setting neither llama.cpp nor transformers' GGUF reader
can rebuild, is refused with one line before the file is opened.

The file follows llama.cpp's convert_hf_to_gguf.py, so llama.cpp, Ollama and transformers
(`from_pretrained(folder, gguf_file=name)`) read it as they read that converter's output:
- Llama-layout q/k rows are reordered from Hugging Face's rotate-half layout to llama.cpp's interleaved pairs
  (transformers' GGUF reader undoes exactly this);
- Gemma norms are stored as 1 + w (Gemma's RMSNorm scales by 1 + w; llama.cpp multiplies by the stored
  weight, and transformers' reader subtracts 1 again);
- Llama 3 rope scaling becomes llama.cpp's `rope_freqs` tensor;
- 1-D tensors (norms, biases) stay float32; q8_0 falls back to f16 for a matrix whose rows are not a
  multiple of 32 values.
The tokenizer goes in as llama.cpp's two vocabulary kinds: "gpt2" (byte-level BPE: tokens, types, merges and
the pre-tokenizer's name) or "llama" (SentencePiece-style BPE with byte fallback: tokens, scores, types).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import runs
from .chat import ChatFormat, get_format
from .config import ConfigError
from .log import log

OUT_TYPES = ("f16", "q8_0", "f32")
MODEL_TYPES = {"gemma3_text": "gemma3", "llama": "llama", "mistral": "llama", "phi3": "phi3", "qwen2": "qwen2"}
CONVERTER_ENV = "FT_GGUF_CONVERTER"

# Byte-level pre-tokenizer splits, as the `tokenizer.ggml.pre` names llama.cpp and transformers know them.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}

# llama.cpp's token types (gguf.TokenType), as ints for the metadata array.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# ---------------------------------------------------------------- what can be exported

def refuse_unsupported(model_type: str | None) -> None:
    """One-line ConfigError for a model_type this writer has no mapping for (None: not known yet, passes)."""
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ConfigError(f"--gguf: architecture '{model_type}' is not supported by the built-in GGUF writer "
                          f"(supported: {', '.join(sorted(MODEL_TYPES))}); export without --gguf, or set "
                          f"{CONVERTER_ENV} to llama.cpp's convert_hf_to_gguf.py")


def _rope(cfg, layer_type: str = "full_attention") -> dict:
    """The rope settings of one attention kind, from `rope_parameters` (transformers 5) or the older fields."""
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if isinstance(params.get(layer_type), dict):
        params = dict(params[layer_type])
    legacy = getattr(cfg, "rope_scaling", None)
    if isinstance(legacy, dict) and "rope_type" not in params:
        params.update(legacy)
    if "rope_theta" not in params and getattr(cfg, "rope_theta", None) is not None:
        params["rope_theta"] = cfg.rope_theta
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _problems(cfg) -> list[str]:
    """Settings of this config that the GGUF file cannot carry: llama.cpp hard-codes them, or transformers'
    GGUF reader rebuilds the config from the file with its own defaults for everything the file lacks."""
    arch, out = MODEL_TYPES[cfg.model_type], []

    def need(ok: bool, what: str) -> None:
        if not ok:
            out.append(what)

    rope = _rope(cfg)
    if arch == "gemma3":
        # llama.cpp: every 6th layer global, local rope base 10000, attention scale 1/sqrt(head_dim);
        # transformers' reader: query_pre_attn_scalar 256, no softcapping, gelu-tanh (Gemma3TextConfig defaults)
        pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                   for i in range(cfg.num_hidden_layers)]
        need(list(getattr(cfg, "layer_types", pattern) or pattern) == pattern,
             "layer_types other than Gemma 3's five sliding layers to one global")
        need(rope["rope_type"] == "default", f"rope scaling '{rope['rope_type']}'")
        need(_rope(cfg, "sliding_attention").get("rope_theta", 10000.0) == 10000.0,
             "a local rope base other than 10000")
        need(cfg.query_pre_attn_scalar == _head_dim(cfg) == 256, "query_pre_attn_scalar or head_dim other than 256")
        need(cfg.final_logit_softcapping is None and cfg.attn_logit_softcapping is None, "logit softcapping")
        need(cfg.hidden_activation == "gelu_pytorch_tanh", f"activation {cfg.hidden_activation}")
        need(not getattr(cfg, "use_bidirectional_attention", False), "bidirectional attention")
    else:
        need(getattr(cfg, "hidden_act", "silu") == "silu", f"activation {getattr(cfg, 'hidden_act', None)}")
        if arch != "qwen2":  # Qwen 2 always has q/k/v biases, and both readers expect them
            need(not getattr(cfg, "attention_bias", False) and not getattr(cfg, "mlp_bias", False),
                 "attention/MLP biases (transformers' reader drops them)")
        need(getattr(cfg, "pretraining_tp", 1) == 1, "pretraining_tp > 1")
        allowed = {"llama": ("default", "llama3", "linear"), "phi3": ("default",), "qwen2": ("default",)}[arch]
        need(rope["rope_type"] in allowed, f"rope scaling '{rope['rope_type']}'")
        need(getattr(cfg, "partial_rotary_factor", 1.0) == 1.0, "partial rotary embeddings")
    return out


def _notes(cfg, arch: str) -> None:
    """What one of the two readers runs differently, only on inputs the project's prompts do not reach."""
    if arch == "llama" and _rope(cfg)["rope_type"] != "default":
        log(f"--gguf: {_rope(cfg)['rope_type']} rope scaling is written for llama.cpp (as llama.cpp's converter "
            "does); transformers' GGUF reader ignores it and loads plain rope")
    window = getattr(cfg, "sliding_window", None)
    if arch in ("llama", "phi3") and window and window < cfg.max_position_embeddings:
        reader = "llama.cpp's llama architecture" if arch == "llama" else "transformers' GGUF reader"
        log(f"--gguf: {reader} has no sliding attention window; outputs match up to {window} tokens")


def check_config(cfg) -> None:
    refuse_unsupported(cfg.model_type)
    problems = _problems(cfg)
    if problems:
        raise ConfigError(f"--gguf: this {cfg.model_type} model has {'; '.join(problems)}, which a GGUF file "
                          "cannot carry (llama.cpp and transformers would run another model); export without --gguf")


# ---------------------------------------------------------------- hyperparameters

def _hparams(w, cfg, arch: str) -> None:
    """The `<arch>.*` keys llama.cpp's converter writes for these architectures."""
    rope = _rope(cfg)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    if arch == "gemma3":
        w.add_key_length(_head_dim(cfg))
        w.add_value_length(_head_dim(cfg))
        w.add_sliding_window(cfg.sliding_window)
        return
    w.add_rope_dimension_count(_head_dim(cfg))  # transformers' llama reader takes head_dim from this key
    if _head_dim(cfg) != cfg.hidden_size // cfg.num_attention_heads:  # llama.cpp's default is hidden / heads
        w.add_key_length(_head_dim(cfg))
        w.add_value_length(_head_dim(cfg))
    if arch == "llama":
        w.add_vocab_size(cfg.vocab_size)
        if rope["rope_type"] == "linear":
            import gguf
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(rope["factor"])
    if arch == "phi3":
        w.add_rope_scaling_orig_ctx_len(getattr(cfg, "original_max_position_embeddings", cfg.max_position_embeddings))
        w.add_sliding_window(getattr(cfg, "sliding_window", None) or 0)  # 0 tells llama.cpp: no sliding window


def llama3_rope_factors(cfg) -> list[float]:
    """llama.cpp's `rope_freqs` for Llama 3 rope scaling: the factor each rotary frequency is divided by."""
    rope, dim = _rope(cfg), _head_dim(cfg)
    base, factor = rope.get("rope_theta", 10000.0), rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return out


# ---------------------------------------------------------------- tensors

@dataclass
class _Tensor:
    name: str  # GGUF name
    shape: tuple
    qtype: object  # gguf.GGMLQuantizationType
    data: Callable  # () -> float32 numpy array in the GGUF layout


def _safetensors(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise ConfigError(f"--gguf: {folder} has no model*.safetensors")
    return files


def _permute(t, n_head: int):
    """Hugging Face's rotate-half q/k rows -> llama.cpp's interleaved pairs (per head)."""
    return t.reshape(n_head, 2, t.shape[0] // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def _loader(handle, hf_name: str, cfg, arch: str) -> Callable:
    """() -> the tensor as float32 numpy, in llama.cpp's layout."""
    def load():
        t = handle.get_tensor(hf_name).float()
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            t = _permute(t, cfg.num_attention_heads)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            t = _permute(t, cfg.num_key_value_heads)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            t = t + 1.0
        return t.numpy()
    return load


def _qtype(name: str, shape: tuple, out_type: str):
    import gguf

    Q = gguf.GGMLQuantizationType
    if out_type == "f32" or len(shape) < 2 or name.endswith("norm.weight"):
        return Q.F32
    if out_type == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


def plan_tensors(cfg, arch: str, out_type: str, handles: dict) -> list[_Tensor]:
    """Every tensor the file will hold, named, shaped and typed before anything is written."""
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), cfg.num_hidden_layers)
    plan, unknown = [], []
    for hf_name in sorted(handles, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)]):
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and cfg.tie_word_embeddings):
            continue  # recomputed / the embedding matrix again: llama.cpp omits both
        base, _, suffix = hf_name.rpartition(".")
        mapped = names.get_name(base)
        if mapped is None:
            unknown.append(hf_name)
            continue
        handle = handles[hf_name]
        shape = tuple(handle.get_slice(hf_name).get_shape())
        name = f"{mapped}.{suffix}"
        plan.append(_Tensor(name, shape, _qtype(name, shape, out_type), _loader(handle, hf_name, cfg, arch)))
    if unknown:
        raise ConfigError(f"--gguf: {len(unknown)} tensor(s) have no {arch} GGUF name (first: {unknown[0]}); "
                          "is this a text-only causal LM?")
    if arch == "llama" and _rope(cfg)["rope_type"] == "llama3":
        factors = np.array(llama3_rope_factors(cfg), dtype=np.float32)
        plan.append(_Tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors.shape,
                            gguf.GGMLQuantizationType.F32, lambda: factors))
    return plan


# ---------------------------------------------------------------- tokenizer

def _nodes(obj) -> list[dict]:
    """A tokenizer.json component and everything nested in its Sequence."""
    if not isinstance(obj, dict):
        return []
    inner = obj.get("pretokenizers") or obj.get("normalizers") or obj.get("decoders") or obj.get("processors") or []
    return [obj] + [n for child in inner for n in _nodes(child)]


def _pre_name(pre: dict | None) -> str:
    """`tokenizer.ggml.pre` for a byte-level tokenizer, from its split regex."""
    nodes = _nodes(pre)
    splits = [n["pattern"].get("Regex") for n in nodes if n.get("type") == "Split"]
    if not splits and any(n.get("type") == "ByteLevel" and n.get("use_regex", True) for n in nodes):
        return "gpt-2"
    if len(splits) == 1 and splits[0] in PRE_SPLITS:
        return PRE_SPLITS[splits[0]]
    raise ConfigError("--gguf: the tokenizer's pre-tokenizer split is not one llama.cpp knows by name "
                      "(supported: GPT-2, Llama 3, Qwen 2); export without --gguf")


@dataclass
class Vocab:
    model: str  # "gpt2" | "llama"
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    add_space_prefix: bool


def read_vocab(tokenizer, n_rows: int, arch: str) -> Vocab:
    """The tokenizer as llama.cpp's vocabulary arrays, one entry per embedding row."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    pieces = _nodes(spec.get("pre_tokenizer")) + _nodes(spec.get("decoder"))
    byte_level = any(n.get("type") == "ByteLevel" for n in pieces)
    if model.get("type") != "BPE" or not (byte_level or model.get("byte_fallback")):
        raise ConfigError(f"--gguf: a {model.get('type')} tokenizer without byte-level or byte-fallback pieces "
                          "is not supported (supported: byte-level BPE, SentencePiece-style BPE)")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    if max([*by_id, *added]) >= n_rows:
        raise ConfigError(f"--gguf: the tokenizer has ids up to {max([*by_id, *added])} but the embedding has only "
                          f"{n_rows} rows")
    tokens, types, scores, unk = [], [], [], tokenizer.unk_token_id
    for i in range(n_rows):
        if i in added:
            text, kind = added[i]["content"], CONTROL if added[i]["special"] else USER_DEFINED
        elif i in by_id:
            text, kind = by_id[i], NORMAL
        else:  # ids the tokenizer never produces: llama.cpp pads them the same way
            text, kind = f"[PAD{i}]", UNUSED
        if not byte_level:
            kind, text = _spm_kind(i, text, kind, unk, arch)
        tokens.append(text)
        types.append(kind)
        # SentencePiece merges the pair whose result scores highest; its BPE vocabularies list pieces best-first
        scores.append(-float(i) if kind == NORMAL else 0.0 if kind == BYTE else -1000.0)
    if byte_level:
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        if not merges:  # llama.cpp refuses a byte-level vocabulary without them, and gguf cannot write []
            raise ConfigError("--gguf: the byte-level tokenizer has no merges; llama.cpp needs them")
        return Vocab("gpt2", _pre_name(spec.get("pre_tokenizer")), tokens, types, None, merges, False)
    prefix = any(n.get("type") == "Prepend" for n in _nodes(spec.get("normalizer"))) or any(
        n.get("type") == "Metaspace" and n.get("prepend_scheme", "always") != "never"
        for n in _nodes(spec.get("pre_tokenizer")))
    return Vocab("llama", "default", tokens, types, scores, None, prefix)


def _spm_kind(i: int, text: str, kind: int, unk_id: int | None, arch: str) -> tuple[int, str]:
    if kind == NORMAL and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
        return BYTE, text
    if kind == NORMAL and i == unk_id:
        return UNKNOWN, text
    # Gemma's runs of 2+ spaces are user-defined pieces spelled with real spaces in its GGUF files (ids 138-168
    # in the embedded Gemma 3 file); transformers' Gemma reader respells them as "▁▁...".
    if arch == "gemma3" and kind == NORMAL and len(text) > 1 and set(text) == {"▁"}:
        kind = USER_DEFINED
    if kind == USER_DEFINED:  # llama.cpp matches user-defined pieces in the raw text, where spaces are spaces
        text = text.replace("▁", " ")
    return kind, text


def _special_ids(tokenizer, fmt: ChatFormat | None) -> dict[str, int]:
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
           "pad": tokenizer.pad_token_id}
    if fmt is not None:  # llama.cpp stops generation on the end-of-turn token
        eot = tokenizer.convert_tokens_to_ids(fmt.end_of_turn)
        ids["eot"] = eot if eot != tokenizer.unk_token_id else None
    return {k: v for k, v in ids.items() if v is not None}


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing plain text puts BOS first (llama.cpp and Ollama then add it themselves)."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _add_tokenizer(w, tokenizer, vocab: Vocab, fmt: ChatFormat | None, chat_template: str | None) -> None:
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        w.add_token_merges(vocab.merges)
    for kind, token_id in _special_ids(tokenizer, fmt).items():
        getattr(w, f"add_{kind}_token_id")(token_id)
    ids = tokenizer("a")["input_ids"]  # what plain text gets around it, as llama.cpp's add_bos/add_eos say
    w.add_add_bos_token(adds_bos(tokenizer))
    w.add_add_eos_token(tokenizer.eos_token_id is not None and bool(ids) and ids[-1] == tokenizer.eos_token_id)
    if vocab.model == "llama":
        w.add_add_space_prefix(vocab.add_space_prefix)
    if chat_template:
        w.add_chat_template(chat_template)


# ---------------------------------------------------------------- chat templates (from shared/chat.py's formats)

def _turn_parts(fmt: ChatFormat, role: str) -> tuple[str, str]:
    """(text before the content, text after it) of one turn, as chat.render writes it."""
    before, after = fmt.turn(role, "\x00").split("\x00")
    return before, after


def jinja_template(fmt: ChatFormat) -> str:
    """The run's chat format as a Jinja chat template (the GGUF's tokenizer.chat_template): the same text as
    chat.render(messages, fmt, add_generation_prompt=True). Families without a system role (Gemma) fold the
    system text into the next user turn, as chat.render does."""
    def text(*parts: str) -> str:  # an output statement joining Jinja expressions and string literals
        return "{{- " + " + ".join(p if p in ("content", "ns.system") else json.dumps(p, ensure_ascii=False)
                                   for p in parts) + " -}}"

    user, end = _turn_parts(fmt, "user")
    model = _turn_parts(fmt, "assistant")[0]
    out = ["{%- set ns = namespace(system='') -%}", text(fmt.bos) if fmt.bos else "",
           "{%- for m in messages -%}{%- set content = m['content'] -%}"]
    if fmt.system_role:
        out += [f"{{%- if m['role'] == '{role}' -%}}{text(_turn_parts(fmt, role)[0], 'content', end)}{{%- endif -%}}"
                for role in ("system", "user", "assistant")]
    else:
        out += ["{%- if m['role'] == 'system' -%}{%- set ns.system = content -%}",
                "{%- elif m['role'] == 'user' -%}", text(user),
                "{%- if ns.system -%}", text("ns.system", "\n\n"), "{%- endif -%}",
                text("content", end), "{%- set ns.system = '' -%}",
                "{%- else -%}{%- if ns.system -%}", text(user, "ns.system", end), "{%- set ns.system = '' -%}",
                "{%- endif -%}", text(model, "content", end), "{%- endif -%}"]
    out += ["{%- endfor -%}", "{%- if ns.system -%}", text(user, "ns.system", end), "{%- endif -%}",
            "{%- if add_generation_prompt -%}", text(model), "{%- endif -%}"]
    return "".join(out)


def ollama_template(fmt: ChatFormat, with_bos: bool) -> str:
    """The same prompt as a Go template over Ollama's .Messages (checked against chat.render with Go 1.19's
    text/template for every family). No whitespace trimming anywhere: the newlines in the turn markers are
    part of the prompt the model was trained on."""
    user, end = _turn_parts(fmt, "user")
    model = _turn_parts(fmt, "assistant")[0]
    out = [fmt.bos if with_bos else ""]
    if fmt.system_role:
        out.append("{{ range .Messages }}")
        for i, role in enumerate(("system", "user", "assistant")):
            out.append(f'{{{{ {"else " if i else ""}if eq .Role "{role}" }}}}{_turn_parts(fmt, role)[0]}'
                       f"{{{{ .Content }}}}{end}")
        out.append("{{ end }}{{ end }}")
    else:
        out += ['{{ $system := "" }}{{ range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}',
                f'{{{{ else if eq .Role "user" }}}}{user}{{{{ if $system }}}}{{{{ $system }}}}\n\n{{{{ end }}}}',
                f'{{{{ .Content }}}}{end}{{{{ $system = "" }}}}',
                f'{{{{ else if eq .Role "assistant" }}}}{{{{ if $system }}}}{user}{{{{ $system }}}}{end}',
                f'{{{{ $system = "" }}}}{{{{ end }}}}{model}{{{{ .Content }}}}{end}{{{{ end }}}}{{{{ end }}}}',
                f"{{{{ if $system }}}}{user}{{{{ $system }}}}{end}{{{{ end }}}}"]
    out.append(model)
    return "".join(out)


def modelfile_text(gguf_name: str, fmt: ChatFormat, add_bos: bool, raw: bool = False, system: str = "") -> str:
    """An Ollama Modelfile: the run's prompt format and its end-of-turn stop token. `raw`: a product trained on
    plain text (the price predictor), whose prompt the user writes whole."""
    with_bos = bool(fmt.bos) and not add_bos  # a GGUF that adds BOS itself gets none from the template
    template = (fmt.bos if with_bos else "") + "{{ .Prompt }}" if raw else ollama_template(fmt, with_bos)
    lines = [f"# Ollama Modelfile for {gguf_name}: ollama create NAME -f <this file>",
             f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system and not raw:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{fmt.end_of_turn}"',
              "PARAMETER temperature 0"]  # greedy decoding, as the project's evaluation runs it
    return "\n".join(lines) + "\n"


def modelfile_path(gguf: Path) -> Path:
    return gguf.with_name(f"{gguf.stem}.Modelfile")


def write_modelfile(gguf: Path, fmt: ChatFormat, add_bos: bool, raw: bool = False, system: str = "") -> Path:
    path = modelfile_path(gguf)
    path.write_text(modelfile_text(gguf.name, fmt, add_bos, raw, system), encoding="utf-8")
    return path


def product_prompt(product: str | None) -> tuple[bool, str]:
    """(plain text?, default system prompt) of a product, from its task object: a product that overrides
    Task.inference_prompt writes its own prompt text (no chat template); a chat product's messages for an
    empty row start with its default system prompt. (False, "") when the product cannot be imported."""
    import collections
    import importlib

    from .data import Row
    from .task import Task

    try:
        task = importlib.import_module(f"apps.{product}.task").TASK
    except (ImportError, AttributeError, TypeError):
        return False, ""
    if type(task).inference_prompt is not Task.inference_prompt:
        return True, ""
    try:
        first = task.messages(Row(collections.defaultdict(str), "", 0))[0]
    except (NotImplementedError, KeyError, IndexError, TypeError, ValueError):
        return False, ""
    return False, first["content"] if first.get("role") == "system" else ""


# ---------------------------------------------------------------- the file

def converter_command() -> list[str] | None:
    """llama.cpp's convert_hf_to_gguf.py (or an executable) when $FT_GGUF_CONVERTER names it: the opt-in for
    architectures the built-in writer refuses. None: use the built-in writer."""
    if not os.environ.get(CONVERTER_ENV):
        return None
    script = Path(os.environ[CONVERTER_ENV]).expanduser()
    if not script.is_file():
        raise ConfigError(f"{CONVERTER_ENV}={script}: no such file (unset it to use the built-in GGUF writer)")
    return [sys.executable, str(script)] if script.suffix == ".py" else [str(script)]


def preflight(gguf: Path, model_type: str | None, overwrite: bool) -> list[str] | None:
    """Refuse what can be refused before merging; return the external converter's command, or None for the
    built-in writer. model_type: the base's, from the run record (None: checked when writing)."""
    if gguf.suffix.lower() != ".gguf":
        raise ConfigError(f"--gguf {gguf}: the file name must end in .gguf")
    if gguf.is_dir():
        raise ConfigError(f"--gguf {gguf} is a folder; give a file name ending in .gguf")
    holder = runs.existing_ancestor(gguf.parent)
    if not holder.is_dir():
        raise ConfigError(f"--gguf {gguf}: {holder} is a file, not a folder")
    for path in (gguf, modelfile_path(gguf)):
        if path.exists() and not overwrite:
            raise ConfigError(f"--gguf: {path} exists; pass --overwrite to replace it")
    converter = converter_command()
    if converter is None:
        refuse_unsupported(model_type)
    return converter


def run_converter(converter: list[str], merged: Path, gguf: Path, out_type: str) -> None:
    cmd = [*converter, str(merged), "--outfile", str(gguf), "--outtype", out_type]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not gguf.is_file():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"GGUF conversion failed (exit {done.returncode}: {last[0][:300]}); the merged model in "
                          f"{merged} is complete. Command: {' '.join(cmd)}")


def export(merged: Path, gguf: Path, out_type: str, family: str, product: str | None = None,
           converter: list[str] | None = None) -> dict:
    """The GGUF of a merged run (built-in writer, or the opted-in converter) and its Ollama Modelfile."""
    from transformers import AutoTokenizer

    raw, system = product_prompt(product)
    gguf.parent.mkdir(parents=True, exist_ok=True)
    if converter:
        run_converter(converter, merged, gguf, out_type)
        info = {"path": str(gguf), "type": out_type, "add_bos": adds_bos(AutoTokenizer.from_pretrained(merged))}
    else:  # a plain-text product gets no chat template: its prompts are not chats
        info = write_gguf(merged, gguf, out_type, family, chat_template="" if raw else None)
    info["modelfile"] = str(write_modelfile(gguf, get_format(family), info["add_bos"], raw, system))
    return info


def write_gguf(folder: Path, out: Path, out_type: str = "f16", family: str | None = None,
               chat_template: str | None = None) -> dict:
    """Write the model in `folder` (safetensors + config.json + tokenizer) to `out`, written beside and moved
    into place. `family`: the run's chat format, whose end-of-turn token becomes the EOT id and whose template
    becomes the chat template unless `chat_template` is given ("" writes none). Returns a summary."""
    import gguf
    import numpy as np
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer

    if out_type not in OUT_TYPES:
        raise ConfigError(f"--gguf-type {out_type}: choose one of {', '.join(OUT_TYPES)}")
    t0 = time.time()
    cfg = AutoConfig.from_pretrained(folder)
    check_config(cfg)
    arch = MODEL_TYPES[cfg.model_type]
    _notes(cfg, arch)
    fmt = get_format(family) if family else None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if chat_template is None:
        chat_template = jinja_template(fmt) if fmt else getattr(tokenizer, "chat_template", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    from contextlib import ExitStack
    with ExitStack() as stack:
        handles = {}
        for file in _safetensors(folder):
            h = stack.enter_context(safe_open(str(file), framework="pt"))
            handles.update(dict.fromkeys(h.keys(), h))
        plan = plan_tensors(cfg, arch, out_type, handles)
        rows = next(t.shape[0] for t in plan if t.name == "token_embd.weight")
        vocab = read_vocab(tokenizer, rows, arch)

        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch.upper())])
        try:
            w.add_type(gguf.GGUFType.MODEL)
            w.add_name(folder.name)
            _hparams(w, cfg, arch)
            w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type])
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            _add_tokenizer(w, tokenizer, vocab, fmt, chat_template)
            for t in plan:
                nbytes = math.prod(gguf.quant_shape_to_byte_shape(t.shape, t.qtype))
                w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=t.qtype)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for t in plan:  # one tensor in memory at a time
                w.write_tensor_data(gguf.quants.quantize(t.data(), t.qtype))
            w.close()
            os.replace(tmp, out)
        finally:
            w.close()
            tmp.unlink(missing_ok=True)
    return {"path": str(out), "architecture": arch, "type": out_type, "tensors": len(plan),
            "bytes": out.stat().st_size, "add_bos": adds_bos(tokenizer), "seconds": round(time.time() - t0, 1)}
