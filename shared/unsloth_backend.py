"""Unsloth backend (CUDA only). Untested on this project's CPU machines: see README "GPU path".

Unsloth patches transformers when imported, so `shared/__init__.py` imports it first whenever it is
installed and a CUDA device is visible.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def load_unsloth(cfg: ModelConfig, where: str, dtype: torch.dtype):
    from unsloth import FastLanguageModel

    from .models import load_tokenizer

    model, _ = FastLanguageModel.from_pretrained(
        model_name=where, max_seq_length=cfg.max_length, dtype=dtype,
        load_in_4bit=cfg.quantization == "4bit", load_in_8bit=cfg.quantization == "8bit",
        trust_remote_code=cfg.trust_remote_code)
    tokenizer, fmt = load_tokenizer(where, cfg)
    return model, tokenizer, fmt
