"""Float32 training from a bf16 checkpoint (shared/embeddings.py): the token embeddings stay bf16, every value
is the float32 model's; and the activations kept for backward in bf16 (shared/lean.py:saved_in)."""
from __future__ import annotations

import pytest
import torch

from shared import embeddings, lean, loss
from shared.config import ModelConfig


@pytest.fixture(scope="module")
def bf16_gemma_dir(tiny_gemma_dir, tmp_path_factory):
    """The tiny Gemma 3 saved in bf16, as the embedded model's cache is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-gemma-bf16")
    AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, dtype=torch.bfloat16).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_gemma_dir).save_pretrained(path)
    return path


def _cfg(path) -> ModelConfig:
    return ModelConfig(name=str(path), chat_template="chatml", dtype="float32", max_length=256)


def _float32_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_float32_training_keeps_the_embeddings_bf16_and_computes_the_float32_values(bf16_gemma_dir):
    from shared.models import load, stored_dtype

    assert stored_dtype(str(bf16_gemma_dir)) == "bfloat16"
    model, _, _ = load(_cfg(bf16_gemma_dir), training=True)
    plain = _float32_model(bf16_gemma_dir)
    embed = model.get_input_embeddings()
    assert embed.weight.dtype == torch.bfloat16 and model.get_output_embeddings().weight is embed.weight
    assert embeddings.compute_dtype(embed.weight) == torch.float32
    assert {p.dtype for n, p in model.named_parameters() if "embed_tokens" not in n} == {torch.float32}
    # The scale Gemma builds in the model's dtype is the float32 one, not bf16's rounding of it (25.25 for 640).
    assert embed.embed_scale.dtype == torch.float32 and torch.equal(embed.embed_scale, plain.model.embed_tokens.embed_scale)
    ids = torch.randint(0, embed.weight.shape[0], (3, 11))
    with torch.no_grad():
        assert torch.equal(embed(ids), plain.get_input_embeddings()(ids))  # bit for bit
        ours, theirs = model(input_ids=ids).logits, plain(input_ids=ids).logits
    assert ours.dtype == torch.float32 and torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_the_loss_and_its_gradients_match_the_float32_model(bf16_gemma_dir, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from shared.models import load

    monkeypatch.setattr(loss, "SLICE_VALUES", 64 * 80)  # several slices of the 259-token vocabulary
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
    torch.manual_seed(0)
    ours = get_peft_model(load(_cfg(bf16_gemma_dir), training=True)[0], config)
    torch.manual_seed(0)
    plain = get_peft_model(_float32_model(bf16_gemma_dir), config)
    ids = torch.randint(5, 250, (3, 20))
    labels = ids.clone()
    labels[:, :12] = -100
    values, grads = [], []
    for model in (ours, plain):
        value = loss.completion_loss(model, {"input_ids": ids, "labels": labels})
        values.append(value)
        grads.append(torch.autograd.grad(value, [p for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(values[0], values[1], rtol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_greedy_decoding_is_the_float32_models(bf16_gemma_dir):
    from shared.models import load

    model, _, _ = load(_cfg(bf16_gemma_dir), training=True)
    plain = _float32_model(bf16_gemma_dir)
    prompt = torch.randint(5, 250, (2, 7))
    outs = [m.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                       pad_token_id=0) for m in (model, plain)]
    assert torch.equal(outs[0], outs[1])


def test_an_embedding_it_cannot_reproduce_is_widened(bf16_gemma_dir):
    """A lookup that does more than scale its rows is not ours to rewrite: the model is widened whole."""
    model = _float32_model(bf16_gemma_dir).to(torch.bfloat16)
    embed = model.get_input_embeddings()
    plain_forward = embed.forward
    embed.forward = lambda ids: plain_forward(ids) + 1.0
    assert embeddings.widen(model) == {"kept_bf16_mb": 0}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def _gradients(dtype):
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    for p in layers.parameters():
        p.requires_grad_(False)
    lora = torch.nn.Linear(64, 4, bias=False)
    x = torch.randn(32, 64, requires_grad=True)
    with lean.saved_in(dtype, torch.nn.ModuleList([layers, lora])):
        h = torch.nn.functional.layer_norm(x, (64,))
        out = layers(h).square().sum() + lora(h).square().sum() + lora(h).mean()
    out.backward()
    return x.grad, lora.weight.grad


def test_activations_kept_in_bf16_give_the_float32_gradients_within_bf16_rounding():
    g_x, g_lora = _gradients(None)
    n_x, n_lora = _gradients(torch.bfloat16)
    assert not torch.equal(g_x, n_x)  # the activations were narrowed
    assert torch.allclose(n_x, g_x, rtol=2e-2, atol=2e-2 * g_x.abs().max())
    assert torch.allclose(n_lora, g_lora, rtol=2e-2, atol=2e-2 * g_lora.abs().max())


def test_activations_are_narrowed_once_and_parameters_never():
    lora = torch.nn.Linear(512, 8, bias=False)
    pack, unpack = lean.packing(torch.bfloat16, lora)
    h = torch.randn(64, 512)
    first = pack(h)
    assert isinstance(first, lean._Narrowed) and first.value.dtype == torch.bfloat16
    assert first.value.untyped_storage().nbytes() * 2 == h.untyped_storage().nbytes()  # half the bytes
    assert pack(h) is first  # saved again by the next layer: the same copy
    assert torch.equal(unpack(first), h.bfloat16().float())
    assert pack(h.clone()) is not first  # another tensor with the same values is its own
    for kept in (lora.weight, lora.weight.t(), torch.randn(8), h.bfloat16()):  # a parameter, a view, small, bf16
        assert pack(kept) is kept and unpack(kept) is kept


def test_saved_activations_auto_means_bf16_only_for_float32_on_a_cpu():
    from shared.config import resolve
    from shared.train import saved_activation_dtype

    def dtype_for(**cli):
        return saved_activation_dtype(resolve(cli={"model.name": "x", **cli}))

    assert dtype_for(**{"model.dtype": "float32"}) == torch.bfloat16
    assert dtype_for(**{"model.dtype": "bfloat16"}) is None
    assert dtype_for(**{"model.dtype": "float32", "train.saved_activations": "computed"}) is None
    assert dtype_for(**{"model.dtype": "bfloat16", "train.saved_activations": "bfloat16"}) == torch.bfloat16
