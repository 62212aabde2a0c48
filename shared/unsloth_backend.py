"""Unsloth backend: Unsloth's fused kernels for LoRA/QLoRA training and its fast generation path.

NVIDIA GPUs only (CUDA + Triton). Install with `pip install ".[gpu]"`; `shared/models.py:resolve_backend`
picks this backend automatically when CUDA is visible and the package imports, and explains why not when
`--backend unsloth` is asked for where it cannot run. Unsloth patches transformers when it is imported, so
`shared/__init__.py` imports it first whenever it is installed and a CUDA device is visible.

The three places the core hands over to Unsloth:
- `load_unsloth`: `FastLanguageModel.from_pretrained` (4-bit or 8-bit loading as `model.quantization` says);
  the tokenizer still comes from `models.load_tokenizer`, so the pad-token rule and the chat format are the
  same as with the transformers backend;
- `add_lora`: `FastLanguageModel.get_peft_model` with the run's LoRA settings (the SFTTrainer then gets no
  peft_config); the loss stays the project's answer-only loss (`shared/loss.py`);
- `for_inference`: `FastLanguageModel.for_inference` once the adapter is on (`generate.load_run`).

Not run on a GPU in this project (its machines have none; see docs/gpu.md). tests/test_backend.py checks
these calls against a stand-in `unsloth` module on the CPU.
"""
from __future__ import annotations

import torch

from .config import ModelConfig, RunConfig
from .log import log


def _fast_language_model():
    from unsloth import FastLanguageModel

    return FastLanguageModel


def load_unsloth(cfg: ModelConfig, where: str, dtype: torch.dtype):
    """(model, tokenizer, chat format) with the base loaded by Unsloth."""
    from .models import load_tokenizer

    model, _ = _fast_language_model().from_pretrained(
        model_name=where, max_seq_length=cfg.max_length, dtype=dtype,
        load_in_4bit=cfg.quantization == "4bit", load_in_8bit=cfg.quantization == "8bit",
        trust_remote_code=cfg.trust_remote_code)
    tokenizer, fmt = load_tokenizer(where, cfg)
    log(f"model {cfg.name} ({where}) dtype={dtype} quantization={cfg.quantization} backend=unsloth")
    return model, tokenizer, fmt


def linear_module_names(model) -> list[str]:
    """Names of every linear layer but the output layer: what 'all-linear' means, spelt out for Unsloth."""
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not head})


def add_lora(model, cfg: RunConfig):
    """The model with the run's LoRA adapter added by Unsloth (same r, alpha, dropout, targets and seed as
    the transformers backend's LoraConfig)."""
    from .models import default_target_modules

    targets = cfg.lora.target_modules or default_target_modules(cfg.model)
    if targets in ("all-linear", ["all-linear"]):
        targets = linear_module_names(model)
    return _fast_language_model().get_peft_model(
        model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(targets), bias="none",
        # Unsloth's own activation checkpointing replaces the Trainer's (train.sft_config turns that off)
        use_gradient_checkpointing="unsloth" if cfg.train.gradient_checkpointing else False,
        random_state=cfg.train.seed)


def for_inference(model):
    """Switch an Unsloth model (with its adapter) to Unsloth's generation path."""
    _fast_language_model().for_inference(model)
    return model
