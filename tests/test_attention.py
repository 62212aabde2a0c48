"""shared/attention.py: SDPA's values and gradients for training, SDPA itself for everything else."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from shared import attention


def _case(dtype, batch=3, heads=4, kv_heads=1, length=7, keys=11, dim=16):
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(batch, heads, length, dim, generator=g) * 2).to(dtype)
    k = (torch.randn(batch, kv_heads, keys, dim, generator=g) * 2).to(dtype)
    v = torch.randn(batch, kv_heads, keys, dim, generator=g).to(dtype)
    # causal after a 4-token prefix, the first row of each batch left-padded by two keys
    mask = torch.ones(length, keys, dtype=torch.bool).tril(keys - length)[None, None].repeat(batch, 1, 1, 1)
    mask[0, :, :, :2] = False
    mask[1, :, 0] = False  # a query that attends to nothing (left padding): SDPA's output there is 0
    return q, k, v, mask


class _Module(torch.nn.Module):
    num_key_value_groups = 4
    is_causal = True


def _sdpa_reference(q, k, v, mask):
    """float64 attention, query heads grouped over key/value heads"""
    groups = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("autocast", [False, True])
def test_values_and_gradients_are_sdpa_s_to_rounding(dtype, kv_heads, autocast):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v, mask = _case(dtype, kv_heads=kv_heads)
    module = _Module()
    module.num_key_value_groups = q.shape[1] // kv_heads
    g = torch.randn(q.shape[0], q.shape[2], q.shape[1], q.shape[3]).to(dtype)

    def run(fn, *tensors):
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast and tensors[0].dtype != torch.float64):
            out, _ = fn(module, *leaves, mask, scaling=q.shape[-1] ** -0.5)
        out.backward(g.to(out.dtype))
        return out.detach(), [t.grad for t in leaves]

    ours, ours_grads = run(attention.forward, q, k, v)
    sdpa, sdpa_grads = run(sdpa_attention_forward, q, k, v)
    exact, exact_grads = run(sdpa_attention_forward, q.double(), k.double(), v.double())
    assert ours.shape == sdpa.shape and ours.dtype == sdpa.dtype and ours.is_contiguous()
    tol = 1e-5 if dtype == torch.float32 else 2 ** -7

    def err(a, b):
        return (a.double() - b).abs().max().item()

    for a, b, e in [(ours, sdpa, exact), *zip(ours_grads, sdpa_grads, exact_grads)]:
        assert err(a, e) <= err(b, e) + tol * e.abs().max().item()


def test_without_autograd_it_is_sdpa_bit_for_bit():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v, mask = _case(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(attention.forward(_Module(), q, k, v, mask)[0],
                           sdpa_attention_forward(_Module(), q, k, v, mask)[0])


def test_a_model_trains_with_it_and_generates_as_before(tiny_gemma_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    plain = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, dtype=torch.float32, attn_implementation="sdpa")
    ours = copy.deepcopy(plain)
    assert attention.install(ours)
    assert plain.config._attn_implementation == "sdpa"  # only the model it was installed on
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding: its queries attend to nothing, and their outputs are never used
    labels = ids.masked_fill(mask == 0, -100)
    losses, grads = [], []
    for model in (plain, ours):
        model.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        a = plain.generate(ids[1:], max_new_tokens=6, do_sample=False)
        b = ours.generate(ids[1:], max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)
    assert attention.NAME not in ours.config.to_json_string()  # a saved config names no project code
