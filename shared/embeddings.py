"""Training in float32 with the token embeddings kept in the checkpoint's bf16.

Why: a CPU without fast bf16 trains in float32 (shared.models.weight_dtype), and Gemma 3 270M's tied
262,144 x 640 embedding is then 640 of its 1,022 MiB of weights. Its values come from a bf16 file, so bf16
holds them exactly: kept there, it costs 320 MiB, and loading no longer peaks with the file's pages and a
float32 copy of everything side by side (measured under an AVX2 cap on one CPU: a high-water mark of 2,159 MiB
after loading in float32, 1,784-1,788 MiB this way).

What runs in float32 is unchanged: the model is loaded in bf16, then every other weight and buffer is widened
to float32 (the buffers a model computes when it is built, such as Gemma's embedding scale, are taken from a
float32 build of the same config, so they are the values a float32 load would give). The embedding looks up
its rows and widens them; the output layer multiplies by its weight a slice of rows at a time, each widened
on the fly; shared.loss does the same inside the fused loss, and shared.vocab widens the output
vocabulary's rows once. Every value is what the float32 model computes: the lookup bit for bit, the output
layer up to float32 rounding (tests check both).

Only for a frozen embedding (LoRA, and full fine-tuning of the body, both freeze it) of a known form: a
lookup, optionally times a scale. Anything else is widened like the rest of the model.
"""
from __future__ import annotations

import contextlib
import types

import torch

# Rows of the output layer widened at once: 8,192 x 640 x 4 bytes = 21 MB for Gemma 3 270M.
SLICE_ROWS = 8192
# The dtype a kept-narrow weight computes in, set on the parameter itself so that every user of it (the
# fused loss, the output vocabulary, the output layer) reads the same answer.
COMPUTE_DTYPE = "ft_compute_dtype"


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype `weight` computes in: its own, or float32 for an embedding kept in bf16 here."""
    return getattr(weight, COMPUTE_DTYPE, weight.dtype)


def sliced_matmul(hidden: torch.Tensor, weight: torch.Tensor, rows: int = SLICE_ROWS) -> torch.Tensor:
    """hidden @ weight.T in hidden's dtype, widening `rows` rows of weight at a time."""
    return torch.cat([hidden @ weight[s:s + rows].to(hidden.dtype).t() for s in range(0, weight.shape[0], rows)],
                     dim=-1)


def _lookup_forward(self, input_ids):
    rows = torch.nn.functional.embedding(input_ids, self.weight).float()
    scale = getattr(self, "embed_scale", None)
    return rows * scale.to(rows.dtype) if scale is not None else rows


def _head_forward(self, hidden):
    return sliced_matmul(hidden, self.weight)


@contextlib.contextmanager
def _no_padding_idx(module):
    """padding_idx only zeroes a gradient (the weight is frozen), but F.embedding refuses one past a small
    probe table's rows: drop it while the probe runs."""
    saved = getattr(module, "padding_idx", None)
    if saved is not None:
        module.padding_idx = None
    try:
        yield
    finally:
        if saved is not None:
            module.padding_idx = saved


def _lookup_reproduces(module, n: int = 16) -> bool:
    """Our lookup gives the module's own float32 output, bit for bit, on its first n rows."""
    table = module.weight.detach()[:n].float()
    ids = torch.arange(table.shape[0], device=table.device)[None]
    with torch.no_grad(), _no_padding_idx(module):
        own = torch.func.functional_call(module, {"weight": table}, (ids,))
        ours = _lookup_forward(module, ids)
    return own.dtype == torch.float32 and torch.equal(own, ours)


def _head_reproduces(module) -> bool:
    """Our output layer gives the module's own float32 output on a probe, up to float32 rounding."""
    table = module.weight.detach()[:3 * SLICE_ROWS // 2].float()
    probe = torch.randn(2, 3, table.shape[1], generator=torch.Generator().manual_seed(0)).to(table.device)
    with torch.no_grad():
        own = torch.func.functional_call(module, {"weight": table}, (probe,))
        ours = sliced_matmul(probe, table.to(module.weight.dtype), SLICE_ROWS // 2)
    return own.shape == ours.shape and torch.allclose(own, ours, rtol=1e-5, atol=1e-5)


def _float32_buffers(model) -> dict[str, torch.Tensor]:
    """The buffers of a float32 build of model's config (weights on the meta device: nothing is allocated
    for them)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        twin = type(model)._from_config(model.config, dtype=torch.float32)
    return dict(twin.named_buffers())


def _widen_buffers(model) -> None:
    wide = _float32_buffers(model)
    for name, buf in list(model.named_buffers()):
        if buf.is_floating_point() and buf.dtype != torch.float32:
            owner, _, leaf = name.rpartition(".")
            value = wide.get(name)
            value = value.to(buf.device) if value is not None and value.dtype == torch.float32 else buf.float()
            model.get_submodule(owner)._buffers[leaf] = value


def widen(model) -> dict:
    """Widen a bf16-loaded model to float32 except its token embeddings (input and output, tied or not), which
    stay bf16 and compute in float32 (see the module docstring). Returns the MB kept in bf16."""
    _widen_buffers(model)  # first: the probes below read the float32 embedding scale
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    keep: dict[int, torch.nn.Parameter] = {}
    if isinstance(embed, torch.nn.Embedding) and embed.weight.dtype == torch.bfloat16 and \
            embed.max_norm is None and _lookup_reproduces(embed):
        keep[id(embed.weight)] = embed.weight
    tied = head is not None and head.weight is embed.weight
    head_narrow = isinstance(head, torch.nn.Linear) and head.bias is None and \
        head.weight.dtype == torch.bfloat16 and (id(head.weight) in keep or not tied) and \
        _head_reproduces(head)
    if head_narrow:
        keep[id(head.weight)] = head.weight
    elif tied:
        keep.clear()  # a tied weight that one side cannot read narrow is widened for both
    for p in model.parameters():
        if id(p) not in keep and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
    for p in keep.values():
        # Its own memory: the weights above were read from the file's mapping, whose pages would otherwise stay
        # resident next to their widened copies for as long as this weight kept the mapping open (206 MB
        # of them, measured with Gemma 3 270M).
        p.data = p.data.clone()
        setattr(p, COMPUTE_DTYPE, torch.float32)
    if id(embed.weight) in keep:
        embed.forward = types.MethodType(_lookup_forward, embed)
    if head_narrow:
        head.forward = types.MethodType(_head_forward, head)
    model.config.dtype = torch.float32
    return {"kept_bf16_mb": round(sum(p.numel() * p.element_size() for p in keep.values()) / 2**20)}
