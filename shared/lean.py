"""Less kept for the backward pass: an RMSNorm that keeps its input instead of a float32 copy of it, and a gated
MLP that recomputes its activation instead of keeping it.

Norms. Why: transformers' RMSNorm (Gemma, Llama, Phi-3, Mistral, Qwen) upcasts a bf16 input to float32 and autograd
keeps that copy for the backward pass: 4 bytes per element, six times per Gemma 3 layer (four norms on the
residual stream, two on the query and key heads). Measured on the benchmark's largest translator batch
(16 x 47 tokens, Gemma 3 270M, bf16): 107 of the 330 MB of activations kept for backward were these copies.
This version keeps the bf16 input (2 bytes per element) and the per-row scale, and recomputes the normalised
value in backward: the forward values are the same bit for bit (the same operations in the same order), the
gradients the same up to float32 rounding (tests check both). With a float32 input there is no copy to save
and the memory is unchanged.

`install(model)` swaps the forward of every norm whose class it knows and whose output it reproduces exactly
on a probe input; any other norm (a new transformers formula, an unknown family) keeps its own forward.

Activations kept in bf16 (`saved_in`). Why: where the model computes in float32 (a CPU without fast bf16),
everything autograd keeps for backward is float32: measured on the benchmark's largest translator batch under
an AVX2 cap, 420 MB of activations, against 1,022 MB for all the weights. Kept in bf16 and widened when
backward reads them, they take half; the gradients are then those of bf16 mixed precision (rounded
activations, float32 arithmetic), which is how the bf16 machines train anyway.
"""
from __future__ import annotations

import contextlib
import types
import weakref

import torch

# Gemma scales by (1 + w) in float32 and casts last; Llama and the families that copied it cast first and
# multiply by w in the weight's dtype.
GEMMA_STYLE = ("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm")
LLAMA_STYLE = ("LlamaRMSNorm", "Phi3RMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")
# MLPs whose forward is down_proj(act_fn(gate_proj(x)) * up_proj(x)). Phi-3 fuses gate and up: not listed.
GATED_MLPS = ("GemmaMLP", "Gemma2MLP", "Gemma3MLP", "LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP")


def _scaled(xf: torch.Tensor, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """xf * scale, in place when xf = x.float() is a copy: a norm on a CPU is bound by memory traffic, and every
    [tokens x hidden] float32 temporary costs a pass. Never in place on the caller's own (float32) tensor."""
    return xf.mul_(scale) if xf is not x else xf * scale


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, gemma):
        xf = x.float()
        scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        normed = _scaled(xf, x, scale)
        if gemma:
            out = normed.mul_(1.0 + weight.float()).type_as(x)
        else:
            out = weight * normed.to(x.dtype)
        ctx.save_for_backward(x, scale, weight)
        ctx.gemma = gemma
        return out

    @staticmethod
    def backward(ctx, grad):
        x, scale, weight = ctx.saved_tensors
        normed = _scaled(x.float(), x, scale)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad.float() * normed).reshape(-1, normed.shape[-1]).sum(0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            gn = grad.float() * ((1.0 + weight.float()) if ctx.gemma else weight.float())
            dot = torch.linalg.vecdot(gn, normed).unsqueeze(-1).div_(normed.shape[-1])
            grad_x = gn.sub_(normed.mul_(dot)).mul_(scale).to(x.dtype)
        return grad_x, grad_w, None, None


def _style(module) -> bool | None:
    """True for Gemma's formula, False for Llama's, None for a norm this module does not know."""
    name = type(module).__name__
    if name in GEMMA_STYLE:
        return True
    if name in LLAMA_STYLE:
        return False
    return None


def _eps(module) -> float | None:
    for attr in ("eps", "variance_epsilon"):
        if isinstance(getattr(module, attr, None), float):
            return getattr(module, attr)
    return None


def _lean_norm_forward(self, x):
    return _RMSNorm.apply(x, self.weight, self._lean_eps, self._lean_gemma)


class _GatedProduct(torch.autograd.Function):
    """act(gate) * up, keeping gate and up for backward and recomputing act(gate) there."""

    @staticmethod
    def forward(ctx, gate, up, act):
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return act(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        g, activated = _activated(ctx.act, gate)
        grad_gate, grad_up = _gated_grads(grad, g, activated, up, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_gate, grad_up, None


def _activated(act, gate):
    """(gate as a leaf that requires grad, act(gate) with its graph): act recomputed in backward."""
    with torch.enable_grad():
        g = gate.detach().requires_grad_(True)
        return g, act(g)


def _gated_grads(grad, g, activated, up, needs_gate: bool, needs_up: bool):
    """The gradients of act(gate) * up with respect to gate and up, from `_activated`'s pair."""
    grad_gate = torch.autograd.grad(activated, g, grad * up)[0] if needs_gate else None
    grad_up = grad * activated.detach() if needs_up else None
    return grad_gate, grad_up


def _lean_mlp_forward(self, x):
    gate, up, down = self.gate_proj(x), self.up_proj(x), self.down_proj
    hooked = down._forward_hooks or down._forward_pre_hooks
    dt = _lora_dtype(down, gate) if "_lean" in vars(down) and hasattr(down, "lora_A") and not hooked else None
    if dt is None:  # a plain or a PEFT-run down projection, or one with hooks of its own to call
        return down(_GatedProduct.apply(gate, up, self.act_fn))
    name, base = down.active_adapters[0], down.base_layer
    return _GatedLoraDown.apply(gate, up, self.act_fn, base.weight, base.bias, down.lora_A[name].weight,
                                down.lora_B[name].weight, float(down.scaling[name]), dt)


def _probe(width: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(3, width, generator=torch.Generator().manual_seed(0)).to(like.device, like.dtype)


def _reproduces(module, lean_forward) -> bool:
    """The lean forward gives the module's own output, bit for bit, on a probe input in the weight's dtype."""
    weight = module.weight if hasattr(module, "weight") else module.gate_proj.weight
    probe = _probe(weight.shape[-1], weight)
    with torch.no_grad():
        return torch.equal(type(module).forward(module, probe), lean_forward(module, probe))


def _norm_fits(module) -> bool:
    return _style(module) is not None and _eps(module) is not None and \
        isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 1 and \
        module.weight.is_floating_point()


def _mlp_fits(module) -> bool:
    return type(module).__name__ in GATED_MLPS and all(
        isinstance(getattr(module, name, None), torch.nn.Module) for name in ("gate_proj", "up_proj", "down_proj")) \
        and callable(getattr(module, "act_fn", None)) and module.gate_proj.weight.is_floating_point()  # not 4-bit


def install(model) -> dict[str, int]:
    """Give every known RMSNorm and gated MLP in `model` the lean forward; returns how many of each were changed.
    Idempotent. Call it before PEFT wraps the projections (the MLP's forward calls them by name either way)."""
    checked: dict[tuple, bool] = {}  # one probe per kind of module: class, dtype, eps or activation
    changed = {"norms": 0, "mlps": 0}
    for module in model.modules():
        if "_lean" in vars(module):
            continue
        if _norm_fits(module):
            kind, forward = "norms", _lean_norm_forward
            module._lean_gemma, module._lean_eps = _style(module), _eps(module)
            key = (type(module), module.weight.dtype, module._lean_eps)
        elif _mlp_fits(module):
            kind, forward = "mlps", _lean_mlp_forward
            key = (type(module), module.gate_proj.weight.dtype, type(module.act_fn))
        else:
            continue
        if key not in checked:
            checked[key] = _reproduces(module, forward)
        if checked[key]:
            module._lean = True
            module.forward = types.MethodType(forward, module)
            changed[kind] += 1
    return changed


def _lora_out(x, weight, bias, a, b, scaling, dt):
    """(x W^T + b + s (x A^T) B^T as [tokens x out], x A^T s, A and B in dt): the one forward of a lean LoRA layer."""
    xc = x.to(dt)  # no copy when x is already in dt (the usual case)
    ac, bc = a.to(dt), b.to(dt)
    flat = xc.reshape(-1, xc.shape[-1])
    hs = (flat @ ac.t()).mul_(scaling)  # [tokens x r]: the scaling on the small side
    out = torch.nn.functional.linear(flat, weight.to(dt), None if bias is None else bias.to(dt))
    out.addmm_(hs, bc.t())  # the adapter's product added as the matmul accumulates, no [tokens x out] temporary
    return out, xc, ac, bc, hs


def _lora_grads(ctx, grad, xc, weight, ac, bc, hs, needs_x, needs_a, needs_b):
    """The gradients of `_lora_out` with respect to x (in ctx.x_dtype), A and B (in theirs)."""
    g = grad.reshape(-1, grad.shape[-1]).to(ac.dtype)
    gb = g @ bc  # [tokens x r]
    grad_x = grad_a = grad_b = None
    if needs_x:
        grad_x = (g @ weight.to(g.dtype)).addmm_(gb, ac, alpha=ctx.scaling)
        grad_x = grad_x.view(*grad.shape[:-1], grad_x.shape[-1]).to(ctx.x_dtype)
    if needs_a:
        grad_a = (gb.t() @ xc.reshape(-1, xc.shape[-1])).mul_(ctx.scaling).to(ctx.a_dtype)
    if needs_b:
        grad_b = (g.t() @ hs).to(ctx.b_dtype)
    return grad_x, grad_a, grad_b


class _LoraLinear(torch.autograd.Function):
    """x W^T + b + s (x A^T) B^T for a frozen W, as one forward and one backward, every matmul in `dt`."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling, dt):
        out, xc, ac, bc, hs = _lora_out(x, weight, bias, a, b, scaling, dt)
        ctx.save_for_backward(xc, weight, ac, bc, hs)
        ctx.scaling, ctx.x_dtype, ctx.a_dtype, ctx.b_dtype = scaling, x.dtype, a.dtype, b.dtype
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        xc, weight, ac, bc, hs = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_x, grad_a, grad_b = _lora_grads(ctx, grad, xc, weight, ac, bc, hs, need[0], need[3], need[4])
        return grad_x, None, None, grad_a, grad_b, None, None


class _GatedLoraDown(torch.autograd.Function):
    """down(act(gate) * up) for a gated MLP whose down projection is a lean LoRA layer, keeping only gate and up.
    Why: the product is the down projection's input, which its adapter's gradient reads, and the widest tensor
    of the layer (the MLP's intermediate width); gate and up are kept anyway for the product's own backward, which
    computes act(gate) again, so the product costs one multiplication there instead of [tokens x intermediate]
    kept per layer. Measured on a 2-core float32 Xeon (activations kept in bf16): the translator's default run
    peaked at 3.5-3.6 GB instead of 4.1-4.2 GB (its longest batch), the training benchmark at 1.78 GB instead of
    1.84-1.88, for +5% on a profiled step (docs/speed.md). The forward values are those of the product followed by
    the lean LoRA layer, bit for bit."""

    @staticmethod
    def forward(ctx, gate, up, act, weight, bias, a, b, scaling, dt):
        product = act(gate) * up
        out, _, ac, bc, hs = _lora_out(product, weight, bias, a, b, scaling, dt)
        ctx.save_for_backward(gate, up, weight, ac, bc, hs)
        ctx.act = act
        ctx.scaling, ctx.x_dtype, ctx.a_dtype, ctx.b_dtype = scaling, product.dtype, a.dtype, b.dtype
        return out.view(*product.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        gate, up, weight, ac, bc, hs = ctx.saved_tensors
        need = ctx.needs_input_grad
        g, activated = _activated(ctx.act, gate)
        product = (activated.detach() * up).to(ac.dtype)  # the matmuls' dtype
        grad_product, grad_a, grad_b = _lora_grads(ctx, grad, product, weight, ac, bc, hs,
                                                   need[0] or need[1], need[5], need[6])
        del product
        grad_gate, grad_up = _gated_grads(grad_product, g, activated, up, need[0], need[1])
        return grad_gate, grad_up, None, None, None, grad_a, grad_b, None, None


def _lora_dtype(module, x: torch.Tensor) -> torch.dtype | None:
    """The dtype of the adapter's matmuls: autocast's where it is on, else the activations' (bf16 activations
    with a float32 adapter: bf16 matmuls with float32 accumulation, as autocast would run them; PEFT's own forward
    widens the input to float32 instead). None where this module keeps PEFT's forward: outside autograd
    (evaluation and generation decode exactly as a plain PEFT load), merged or disabled adapters, several or
    mixed adapters, DoRA and other variants, an active dropout, a trained base weight."""
    if not torch.is_grad_enabled() or module.disable_adapters or module.merged or len(module.active_adapters) != 1:
        return None
    name = module.active_adapters[0]
    if name not in module.lora_A or name in module.lora_variant or module.lora_B[name].bias is not None:
        return None
    dropout = module.lora_dropout[name]
    if not (isinstance(dropout, torch.nn.Identity) or not dropout.training or dropout.p == 0):
        return None
    base = module.base_layer.weight
    if base.requires_grad:
        return None
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype if x.dtype == base.dtype else None


def _lean_lora_forward(self, x, *args, **kwargs):
    dt = None if args or kwargs else _lora_dtype(self, x)
    if dt is None:
        return type(self).forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    base = self.base_layer
    return _LoraLinear.apply(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                             float(self.scaling[name]), dt)


def _lora_fits(module, lora_linear: type) -> bool:
    """A PEFT LoRA layer on a plain nn.Linear on the CPU: the case measured (a 4-bit or GPU base keeps PEFT's)."""
    base = getattr(module, "base_layer", None)
    return type(module) is lora_linear and type(base) is torch.nn.Linear and not module.fan_in_fan_out \
        and base.weight.is_floating_point() and base.weight.device.type == "cpu"


def _lora_reproduces(module) -> bool:
    """The lean forward gives PEFT's output on a probe, to the rounding of the dtype, with a random B (B starts
    at zero, which would hide the adapter's half of the formula); B is restored after."""
    name = module.active_adapters[0] if len(module.active_adapters) == 1 else None
    if name is None or name not in module.lora_B:
        return False
    weight = module.base_layer.weight
    b = module.lora_B[name].weight
    kept, training = b.detach().clone(), module.training
    probe = _probe(weight.shape[-1], weight)
    module.train(False)  # no dropout mask in the comparison
    try:
        with torch.no_grad():
            b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(1)).to(b.dtype) / b.shape[-1])
        # with autocast PEFT runs the adapter in the weight's dtype, as the lean forward does; grad on: the lean
        # forward serves autograd only
        with torch.autocast(weight.device.type, dtype=weight.dtype, enabled=weight.dtype != torch.float32):
            own = type(module).forward(module, probe).detach().float()
            lean_out = _lean_lora_forward(module, probe).detach().float()
    finally:
        module.train(training)
        with torch.no_grad():
            b.copy_(kept)
    tol = 1e-5 if weight.dtype == torch.float32 else 2 ** -6
    return torch.allclose(own, lean_out, rtol=tol, atol=tol * own.abs().max().item())


def install_lora(model) -> int:
    """Give every PEFT LoRA linear layer of `model` that fits the one-function forward and backward above; returns
    how many. Why: with bf16 activations and a float32 adapter, PEFT's forward widens each layer's input to
    float32, runs the adapter in float32, adds its [tokens x out] product to the bf16 result in float32 and
    narrows the sum back: four passes over activations per adapted layer, and as many in backward. Measured on
    the translator's default step (Gemma 3 270M, 126 adapted layers, Intel Xeon AMX): 2.59 s -> 2.15 s. The
    adapter's matmuls then run in bf16 with float32 accumulation, as under autocast; on float32 activations the
    values are PEFT's to float32 rounding. Call it after PEFT wraps the model; generation keeps PEFT's forward.
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return 0
    checked: dict[tuple, bool] = {}
    changed = 0
    for module in model.modules():
        if "_lean" in vars(module) or not _lora_fits(module, LoraLinear):
            continue
        key = (type(module), module.base_layer.weight.dtype)
        if key not in checked:
            checked[key] = _lora_reproduces(module)
        if checked[key]:
            module._lean = True
            module.forward = types.MethodType(_lean_lora_forward, module)
            changed += 1
    return changed


# Smaller saved tensors (per-row scales, masks' worth of values) are not worth a cast each.
MIN_NARROWED = 4096


class _Narrowed:
    __slots__ = ("value",)

    def __init__(self, value: torch.Tensor):
        self.value = value


def packing(dtype: torch.dtype, model):
    """(pack, unpack) for torch.autograd.graph.saved_tensors_hooks: a float32 tensor is kept in `dtype`, once
    however many layers save it (the input of q, k and v); the model's parameters, views of them and small
    tensors are kept as they are."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    narrowed: dict[tuple, tuple] = {}  # the values' identity -> (weak reference to their tensor, narrowed copy)

    def pack(t: torch.Tensor):
        if t.dtype != torch.float32 or t.numel() < MIN_NARROWED or t.untyped_storage().data_ptr() in params:
            return t
        # A linear layer saves a 2-D view of its 3-D input, a new view object each time: the same values are
        # recognised by the tensor the view was taken of, its version, and where and how the view reads it.
        base = t._base if t._base is not None else t
        key = (id(base), t._version, t.storage_offset(), tuple(t.shape), t.stride())
        known = narrowed.get(key)
        if known is not None and known[0]() is base:  # the same tensor, not a new one at a reused address
            return known[1]
        packed = _Narrowed(t.detach().to(dtype))
        narrowed[key] = (weakref.ref(base), packed)
        return packed

    def unpack(saved):
        return saved.value.float() if isinstance(saved, _Narrowed) else saved

    return pack, unpack


@contextlib.contextmanager
def saved_in(dtype: torch.dtype | None, model):
    """Inside the block, the float32 activations autograd keeps for backward are kept in `dtype` and widened
    back when backward reads them (see `packing`). No-op when dtype is None."""
    if dtype is None:
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(*packing(dtype, model)):
        yield
