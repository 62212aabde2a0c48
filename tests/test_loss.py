"""The fused answer-only loss equals the model's own loss, in value and in gradients."""
import pytest
import torch

from shared.loss import completion_loss, linear_cross_entropy_sum


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_fused_linear_cross_entropy_matches_plain(softcap):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float32)
    targets = torch.randint(0, 50, (37,))
    fused = linear_cross_entropy_sum(hidden, weight, targets, softcap, chunk_rows=8)
    (g_fused,) = torch.autograd.grad(fused, hidden)
    logits = hidden @ weight.t()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    plain = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (g_plain,) = torch.autograd.grad(plain, hidden)
    assert torch.allclose(fused, plain, rtol=1e-5) and torch.allclose(g_fused, g_plain, atol=1e-5)


def test_completion_loss_equals_model_loss_with_lora(tiny_model_cfg):
    from peft import LoraConfig, get_peft_model

    from shared.models import load

    model, _, _ = load(tiny_model_cfg)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                             init_lora_weights=False))
    ids = torch.randint(5, 200, (3, 20))
    labels = ids.clone()
    labels[:, :12] = -100
    labels[2, 15:] = -100
    ref = model(input_ids=ids, labels=labels).loss
    ours = completion_loss(model, {"input_ids": ids, "labels": labels})
    assert torch.allclose(ours, ref, atol=1e-5)
    lora = [p for p in model.parameters() if p.requires_grad]
    g_ref = torch.autograd.grad(ref, lora)
    g_ours = torch.autograd.grad(ours, lora)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_ref, g_ours))
