"""The fused answer-only loss equals the model's own loss, in value and in gradients."""
import pytest
import torch

from shared import loss
from shared.embeddings import COMPUTE_DTYPE
from shared.loss import completion_loss, linear_cross_entropy_sum


@pytest.mark.parametrize("softcap", [None, 30.0])
@pytest.mark.parametrize("narrow", [False, True], ids=["float32", "bf16 weight computing in float32"])
def test_fused_linear_cross_entropy_matches_plain(softcap, narrow, monkeypatch):
    monkeypatch.setattr(loss, "SLICE_VALUES", 300 * (16 + 37))  # slices of 300 rows: 7 of them, the last short
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(2000, 16, dtype=torch.float32)
    targets = torch.randint(0, 2000, (37,))
    targets[:6] = torch.arange(297, 303)  # targets on both sides of a slice edge
    if narrow:  # an embedding kept in bf16 by shared/embeddings.py: each slice is widened
        weight = weight.bfloat16()
        setattr(weight, COMPUTE_DTYPE, torch.float32)
    fused = linear_cross_entropy_sum(hidden, weight, targets, softcap)
    (g_fused,) = torch.autograd.grad(fused, hidden)
    logits = hidden @ weight.float().t()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    plain = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (g_plain,) = torch.autograd.grad(plain, hidden)
    assert torch.allclose(fused, plain, rtol=1e-5) and torch.allclose(g_fused, g_plain, atol=1e-5)


def test_bf16_gradients_of_confident_tokens_keep_their_precision():
    """In bf16 the target's own term is added apart: summed with the rest and then less the target's row, a
    confident token's small gradient drowned in rounding (relative error 142 against float64, measured)."""
    torch.manual_seed(0)
    weight = (torch.randn(30000, 640) * 0.05).bfloat16()
    targets = torch.randint(0, 30000, (64,))
    hidden = (torch.randn(64, 640) + weight[targets].float() * 20).bfloat16()  # p(target) ~ 1
    exact = hidden.double().requires_grad_(True)
    logits = torch.tanh(exact @ weight.double().t() / 30.0) * 30.0
    torch.nn.functional.cross_entropy(logits, targets, reduction="sum").backward()
    ours = hidden.clone().requires_grad_(True)
    linear_cross_entropy_sum(ours, weight, targets, 30.0).backward()
    assert (ours.grad.double() - exact.grad).norm() / exact.grad.norm() < 0.1


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


def _tiny_gemma3(sliding_window: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                              sliding_window=sliding_window, layer_types=["sliding_attention", "sliding_attention",
                                                                          "full_attention"],
                              final_logit_softcapping=30.0, pad_token_id=0)
    return Gemma3ForCausalLM(config).float()


def _chat_batch():
    """Four rows opening with the same 11 tokens (a system prompt), then their own prompt and answer, padded
    on the right to the longest."""
    torch.manual_seed(1)
    system = torch.randint(5, 200, (11,))
    rows, labels = [], []
    for prompt_len, answer_len in ((5, 4), (9, 7), (3, 2), (6, 9)):
        ids = torch.cat([system, torch.randint(5, 200, (prompt_len + answer_len,))])
        rows.append(ids)
        labels.append(torch.cat([torch.full((11 + prompt_len,), -100), ids[11 + prompt_len:]]))
    width = max(len(r) for r in rows)
    pad = lambda t, v: torch.cat([t, torch.full((width - len(t),), v)])  # noqa: E731
    return {"input_ids": torch.stack([pad(r, 0) for r in rows]),
            "attention_mask": torch.stack([pad(torch.ones(len(r), dtype=torch.long), 0) for r in rows]),
            "labels": torch.stack([pad(lab, -100) for lab in labels])}


@pytest.mark.parametrize("model_kind", ["llama", "gemma3", "gemma3-short-window"])
def test_shared_prefix_gives_the_same_loss_and_gradients(model_kind, tiny_model_cfg):
    from peft import LoraConfig, get_peft_model

    from shared.loss import shared_prefix_length
    from shared.models import load

    if model_kind == "llama":
        model = load(tiny_model_cfg)[0]
    else:  # Gemma 3's sliding-window layers keep their own cache; a window shorter than the rows included
        model = _tiny_gemma3(sliding_window=6 if model_kind == "gemma3-short-window" else 512)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                             task_type="CAUSAL_LM", init_lora_weights=False)).eval()
    batch = _chat_batch()
    assert shared_prefix_length(batch) == 11  # up to the earliest answer token's predecessor, no further
    plain = completion_loss(model, batch)
    shared = completion_loss(model, batch, share_prefix=True)
    assert torch.allclose(plain, shared, atol=1e-5)
    lora = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(plain, lora), torch.autograd.grad(shared, lora)):
        assert torch.allclose(a, b, atol=1e-5)


def test_shared_prefix_applies_only_where_the_rows_agree():
    from shared.loss import MIN_SHARED_PREFIX, shared_prefix_length

    batch = _chat_batch()
    one_row = {k: v[:1] for k, v in batch.items()}
    assert shared_prefix_length(one_row) == 0
    left = dict(batch, attention_mask=batch["attention_mask"].flip(-1))  # left padding: the rows start apart
    assert shared_prefix_length(left) == 0
    short = dict(batch, input_ids=batch["input_ids"].clone())
    short["input_ids"][1, MIN_SHARED_PREFIX - 1] += 1  # the rows part before MIN_SHARED_PREFIX tokens
    assert shared_prefix_length(short) == 0
    assert shared_prefix_length(dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1]))) == 0
