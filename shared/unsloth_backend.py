"""Unsloth backend: Unsloth's fused kernels for LoRA/QLoRA training and its fast generation path.

NVIDIA GPUs only (CUDA + Triton), and not installable next to this project's pinned transformers and trl (see
docs/gpu.md, "Unsloth"). `shared/models.py:resolve_backend` picks it only where it can run and explains why not
when `--backend unsloth` is asked for where it cannot.

Unsloth patches transformers, TRL and PEFT globally when it is imported (its own SFTTrainer, padding-free
batching, attention kernels), so it is imported only once the run's backend has resolved to unsloth
(`activate`, called before the Trainer's arguments and the model exist), never for the transformers backend.

The places the core hands over to Unsloth:
- `load_unsloth`: `FastLanguageModel.from_pretrained` (4-bit or 8-bit loading as `model.quantization` says);
  the tokenizer still comes from `models.load_tokenizer`, so the pad-token rule and the chat format are the
  same as with the transformers backend;
- `add_lora`: `FastLanguageModel.get_peft_model` with the run's LoRA settings, the target names resolved against
  the model Unsloth actually loaded (the SFTTrainer then gets no peft_config); the loss stays the project's
  answer-only loss (`shared/loss.py`);
- `for_inference`: `FastLanguageModel.for_inference` once the adapter is on (`generate.load_run`).

Not run on a GPU in this project (its machines have none; see docs/gpu.md). tests/test_backend.py and
tests/test_gpu_rehearsal.py check these calls against a stand-in `unsloth` module on the CPU.
"""
from __future__ import annotations

import sys

import torch

from .config import ConfigError, ModelConfig, RunConfig
from .log import log


def activate() -> None:
    """Import unsloth (once): it must come before the Trainer's arguments and the model are made, since it patches
    their classes. A release that fails to import (2025.7.2 on transformers 5.23: HybridCache is gone) stops the
    command with one line."""
    if sys.modules.get("unsloth") is not None:
        return
    late = [name for name in ("trl", "peft") if name in sys.modules]
    if late:
        log(f"unsloth is imported after {', '.join(late)}: some of its patches may not apply")
    try:
        import unsloth  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or whatever its import-time patching raises
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else "no message"
        raise ConfigError(f"unsloth is installed but does not import ({e.__class__.__name__}: {first}); see "
                          "docs/gpu.md, section Unsloth, or use --backend transformers") from None


def _fast_language_model():
    from unsloth import FastLanguageModel

    return FastLanguageModel


def load_unsloth(cfg: ModelConfig, kind: str, where: str, dtype: torch.dtype):
    """(model, tokenizer, chat format) with the base loaded by Unsloth. Errors are the same one-line ConfigError
    as with the transformers backend (a gated or missing hub model included)."""
    from . import models

    # Unsloth cuts every input to max_seq_length, at generation too: the training max_length would cut a long
    # prompt's tail (its assistant header included). The model's own context window is the safe length; above
    # it Unsloth would switch on RoPE scaling.
    max_seq_length = models.context_length(where, cfg)
    try:
        model, _ = _fast_language_model().from_pretrained(
            model_name=where, max_seq_length=max_seq_length, dtype=dtype,
            load_in_4bit=cfg.quantization == "4bit", load_in_8bit=cfg.quantization == "8bit",
            trust_remote_code=cfg.trust_remote_code)
        tokenizer, fmt = models.load_tokenizer(where, cfg)
    except ConfigError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as e:  # Unsloth wraps hub errors in RuntimeError
        raise models._load_error(cfg, kind, where, e) from None
    log(f"model {cfg.name} ({where}) dtype={dtype} quantization={cfg.quantization} backend=unsloth "
        f"max_seq_length={max_seq_length} ({type(model).__name__})")
    return model, tokenizer, fmt


def add_lora(model, cfg: RunConfig):
    """The model with the run's LoRA adapter added by Unsloth (same r, alpha, dropout and seed as the transformers
    backend's LoraConfig). The target names are resolved against the model Unsloth loaded: for Phi-3 it loads a
    copy with q/k/v and gate/up split, where qkv_proj and gate_up_proj do not exist and Unsloth passes unknown
    names on to PEFT, which silently adapts only the names that match. Every target is then counted."""
    from . import models

    targets = cfg.lora.target_modules or models.default_target_modules(cfg.model)
    targets = models.resolve_target_modules(model, targets)
    if targets == "all-linear":  # spelt out for Unsloth, which passes names to PEFT
        targets = sorted(models.linear_names(model))
    peft_model = _fast_language_model().get_peft_model(
        model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(targets), bias="none", use_rslora=cfg.lora.use_rslora,
        # Unsloth's own activation checkpointing replaces the Trainer's (train.sft_config turns that off)
        use_gradient_checkpointing="unsloth" if cfg.train.gradient_checkpointing else False,
        random_state=cfg.train.seed)
    counts = models.check_lora_coverage(peft_model, list(targets))
    log("LoRA on " + ", ".join(f"{name} x{n}" for name, n in counts.items()))
    return peft_model


def for_inference(model):
    """Switch an Unsloth model (with its adapter) to Unsloth's generation path."""
    _fast_language_model().for_inference(model)
    model._ft_unsloth_generation = True  # shared.generate then decodes with model.generate, Unsloth's path
    return model
