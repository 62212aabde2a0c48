"""Attention for training steps on a CPU: one float32 score matmul per key/value head, instead of SDPA's kernel.

Why: a training batch here is 16 rows of ~70 queries against ~90 keys, with Gemma 3's four query heads sharing
one key/value head. PyTorch's CPU SDPA (flash kernel, forward and backward) spends most of its time on blocking
and bookkeeping at that size: measured on the translator's default batch shape (16 x 4 heads x 69 queries x 92
keys x 256, bf16, Intel Xeon AMX), forward + backward of one layer took 13.4-14.0 ms with SDPA's grouped-query
path and 7.0 ms here. The query heads of a key/value head are stacked into one matrix, so each score matmul
is one [heads x queries] x [keys] product; scores and the softmax are float32 (as SDPA computes them), the
probabilities meet the values in the activations' dtype. Its output matched float64 as closely as SDPA's did
(mean error 3.8e-4 against SDPA's 3.4e-4 on that shape).

It serves autograd only: evaluation and generation (no grad) call transformers' SDPA function as before, with
the same masks (this implementation uses SDPA's mask builder), so decoding is unchanged. Anything it does not
handle (dropout, soft-capping, position bias, a float mask, a single query) goes to SDPA too.
"""
from __future__ import annotations

import torch

NAME = "ft_cpu_train_sdpa"


def _sdpa(*args, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(*args, **kwargs)


def forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
            **kwargs):
    """transformers' attention interface: query [B, H, L, D], key and value [B, KV, S, D], a bool mask
    [B or 1, 1, L, S] (True = attend); returns ([B, L, H, D], None)."""
    batch, heads, length, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    if not (torch.is_grad_enabled() and query.device.type == "cpu" and dropout == 0.0 and length > 1
            and kwargs.get("softcap") is None and kwargs.get("position_bias") is None and kwargs.get("cache") is None
            and isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.bool
            and attention_mask.dim() == 4 and attention_mask.shape[1] == 1 and heads % kv_heads == 0):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    groups = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    stacked = query.reshape(batch, kv_heads, groups * length, dim)  # the query heads of each key/value head
    with torch.autocast("cpu", enabled=False):  # float32 scores under autocast too (full fine-tuning runs in it)
        scores = torch.matmul(stacked.float(), key.float().transpose(-1, -2)).mul_(scale)  # [B, KV, G*L, S]
        blocked = ~attention_mask[:, :, None]  # [B, 1, 1, L, S] against scores viewed [B, KV, G, L, S]
        scores = scores.view(batch, kv_heads, groups, length, keys).masked_fill(blocked, torch.finfo(torch.float32).min)
        probs = scores.softmax(-1)
        live = attention_mask.any(-1, keepdim=True)[:, :, None]  # a padding query attends to nothing: SDPA gives 0
        if not bool(live.all()):
            probs = probs * live
    probs = probs.to(value.dtype).view(batch, kv_heads, groups * length, keys)
    out = torch.matmul(probs, value).view(batch, heads, length, dim)
    return out.transpose(1, 2).contiguous(), None


def install(model) -> bool:
    """Make `model` (a transformers model on the CPU that uses SDPA) train with this attention; True if it does.
    Registered under its own name with SDPA's mask builder, so every other model keeps its attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or \
            next(model.parameters()).device.type != "cpu" or not hasattr(model, "set_attn_implementation"):
        return False
    AttentionInterface.register(NAME, forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return config._attn_implementation == NAME
