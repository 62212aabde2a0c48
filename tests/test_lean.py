"""shared/lean.py: the same forward values and gradients as transformers' norms and MLPs, less kept for backward."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from shared import lean


def _norm(cls, dim, weight_dtype):
    torch.manual_seed(1)
    norm = cls(dim, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(dim) * 0.3 + (0.0 if cls is Gemma3RMSNorm else 1.0))
    return norm.to(weight_dtype)


def _saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while `fn` runs (parameters excluded)."""
    storages = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize("cls", [Gemma3RMSNorm, LlamaRMSNorm])
@pytest.mark.parametrize("x_dtype,w_dtype", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
                                             (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("train_weight", [False, True])
def test_same_values_and_gradients_as_the_transformers_norm(cls, x_dtype, w_dtype, train_weight):
    plain = _norm(cls, 64, w_dtype)
    slim = copy.deepcopy(plain)
    assert lean.install(slim) == {"norms": 1, "mlps": 0}
    for m in (plain, slim):
        m.weight.requires_grad_(train_weight)
    x = torch.randn(4, 7, 64, dtype=torch.float32).mul(3).to(x_dtype)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [m(xi) for m, xi in zip((plain, slim), xs)]
    assert outs[0].dtype == outs[1].dtype
    assert torch.equal(outs[0], outs[1])  # bit for bit
    g = torch.randn_like(outs[0])
    for o in outs:
        o.backward(g)
    # Against the exact gradient (float64): the lean norm's error is no larger than transformers' own.
    exact = copy.deepcopy(plain).double()
    exact.weight.requires_grad_(True)
    x64 = x.double().requires_grad_(True)
    exact(x64).backward(g.double())

    def err(a, b):
        return (a.double() - b).abs().max().item()

    assert err(xs[1].grad, x64.grad) <= 1.5 * err(xs[0].grad, x64.grad) + 1e-6
    if train_weight:
        assert err(slim.weight.grad, exact.weight.grad) <= 1.5 * err(plain.weight.grad, exact.weight.grad) + 1e-6


def test_bf16_input_keeps_half_the_bytes_for_backward():
    plain = _norm(Gemma3RMSNorm, 256, torch.bfloat16)
    slim = copy.deepcopy(plain)
    lean.install(slim)
    x = torch.randn(16, 40, 256, dtype=torch.bfloat16, requires_grad=True)
    _, plain_bytes = _saved_bytes(lambda: plain(x))
    _, lean_bytes = _saved_bytes(lambda: slim(x))
    assert plain_bytes >= x.numel() * 4  # the float32 copy
    assert lean_bytes <= x.numel() * 2 + 16 * 40 * 4 + 256 * 2  # the bf16 input, one scale per row, the weight


def test_a_norm_with_another_formula_keeps_its_own_forward():
    class Gemma3RMSNorm_(Gemma3RMSNorm):  # a future formula under a known name
        def forward(self, x):
            return super().forward(x) * 2

    Gemma3RMSNorm_.__name__ = "Gemma3RMSNorm"
    odd = Gemma3RMSNorm_(32)
    assert lean.install(odd) == {"norms": 0, "mlps": 0}
    assert "forward" not in vars(odd)


def _mlp(cls_name: str, dtype):
    from transformers import Gemma3TextConfig, LlamaConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3MLP
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(2)
    if cls_name == "Gemma3MLP":
        return Gemma3MLP(Gemma3TextConfig(hidden_size=32, intermediate_size=96)).to(dtype)
    return LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=96, hidden_act="silu")).to(dtype)


@pytest.mark.parametrize("cls_name", ["Gemma3MLP", "LlamaMLP"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gated_mlp_gives_the_same_values_and_gradients_and_keeps_less(cls_name, dtype):
    plain = _mlp(cls_name, dtype)
    slim = copy.deepcopy(plain)
    assert lean.install(slim) == {"norms": 0, "mlps": 1}
    for m in (plain, slim):  # LoRA-like: frozen projections, gradients flow to the input
        m.requires_grad_(False)
    x = torch.randn(4, 9, 32).to(dtype)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    (out_plain, kept_plain), (out_slim, kept_slim) = (_saved_bytes(lambda m=m, xi=xi: m(xi))
                                                     for m, xi in zip((plain, slim), xs))
    assert torch.equal(out_plain, out_slim)
    g = torch.randn_like(out_plain)
    out_plain.backward(g)
    out_slim.backward(g)
    assert torch.equal(xs[0].grad, xs[1].grad)  # the same operations in backward: bit for bit
    act = 4 * 9 * 96 * x.element_size()  # one [tokens x intermediate] tensor
    assert kept_plain - kept_slim >= act


def test_a_loaded_model_trains_to_the_same_loss(tiny_gemma_dir):
    """Installed by models.load for training: a few LoRA steps on the tiny Gemma 3 give the same losses."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def losses(slim: bool) -> list[float]:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, dtype=torch.bfloat16)
        if slim:  # six norms per layer and the final one; one MLP per layer
            assert lean.install(model) == {"norms": 2 * 6 + 1, "mlps": 2}
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        ids = torch.randint(0, 200, (4, 24), generator=torch.Generator().manual_seed(3))
        out = []
        for _ in range(3):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(loss.item())
        return out

    plain, slim = losses(False), losses(True)
    assert plain[0] == slim[0]  # the forward is exact
    assert plain == pytest.approx(slim, rel=2e-2)


def test_models_load_installs_it_for_training_only(tiny_gemma_dir):
    from shared import models
    from shared.config import ModelConfig

    cfg = ModelConfig(name=str(tiny_gemma_dir), chat_template="chatml", dtype="bfloat16", max_length=64)
    trained, tokenizer, _ = models.load(cfg, training=True)
    served, _, _ = models.load(cfg, training=False)
    assert sum("_lean" in vars(m) for m in trained.modules()) == 13 + 2
    assert not any("_lean" in vars(m) for m in served.modules())
    assert tokenizer("hello")["input_ids"]  # the tokenizer works after its construction lists are dropped


@pytest.mark.slow
def test_the_gemma_tokenizer_encodes_decodes_and_saves_the_same_without_its_construction_lists(
        gemma_dir, gemma_tokenizer, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from shared import models

    plain = gemma_tokenizer
    slim = AutoTokenizer.from_pretrained(gemma_dir)
    models._drop_construction_lists(slim)
    assert slim._merges is None and slim._vocab is None
    text = "Translate: The weather is nice today. 오늘은 날씨가 좋네요! <start_of_turn>user\n"
    ids = plain(text)["input_ids"]
    assert slim(text)["input_ids"] == ids
    assert slim.decode(ids) == plain.decode(ids)
    assert slim.get_vocab() == plain.get_vocab()
    slim.save_pretrained(tmp_path)  # the saved tokenizer.json is the Rust tokenizer's own, merges included
    saved = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert saved.encode(text, add_special_tokens=False).ids == plain(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- LoRA layers (install_lora)

def _lora_pair(dtype, **lora):
    """Two identical PEFT LoRA models on one linear layer, B made non-zero so the adapter's half counts."""
    from peft import LoraConfig, get_peft_model

    def build():
        torch.manual_seed(4)
        model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(48, 40, bias=False)).to(dtype),
                               LoraConfig(r=8, lora_alpha=16, target_modules=["0"], **lora))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
        return model

    return build(), build()


def _run(model, x, g, autocast: bool):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.backward(g)
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dtype,autocast", [(torch.float32, False), (torch.bfloat16, True), (torch.bfloat16, False)],
                         ids=["float32", "bf16-autocast", "bf16"])
def test_lora_layer_gives_peft_values_and_gradients_to_rounding(dtype, autocast):
    plain, slim = _lora_pair(dtype, lora_dropout=0.0)
    assert lean.install_lora(slim) == 1
    x = torch.randn(3, 5, 48).to(dtype)
    g = torch.randn(3, 5, 40).to(dtype)
    out_p, gx_p, grads_p = _run(plain, x, g, autocast)
    out_s, gx_s, grads_s = _run(slim, x, g, autocast)
    assert (out_s.dtype, gx_s.dtype) == (out_p.dtype, gx_p.dtype)
    assert {n: t.dtype for n, t in grads_s.items()} == {n: t.dtype for n, t in grads_p.items()}  # float32 A, B
    # Against the exact values (float64): off by no more than the dtype's rounding beyond PEFT's own error.
    out_e, gx_e, grads_e = _run(copy.deepcopy(plain).double(), x.double(), g.double(), False)
    tol = 1e-6 if dtype == torch.float32 else 2 ** -7

    def as_close(lean_value, peft_value, exact):
        err = lambda v: (v.double() - exact).abs().max().item()  # noqa: E731
        return err(lean_value) <= err(peft_value) + tol * exact.abs().max().item()

    assert as_close(out_s, out_p, out_e)
    assert as_close(gx_s, gx_p, gx_e)
    for name, exact in grads_e.items():
        assert as_close(grads_s[name], grads_p[name], exact), name
    if dtype == torch.float32:  # float32 all through: the same values to float32 rounding
        assert torch.allclose(out_s, out_p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype,saved", [(torch.float32, None), (torch.bfloat16, None),
                                         (torch.float32, torch.bfloat16)], ids=["float32", "bf16", "float32-kept-bf16"])
def test_mlp_with_lean_lora_down_keeps_gate_and_up_only(dtype, saved):
    """A gated MLP with LoRA on all three projections: with the lean layers its down projection's input (the
    product) is recomputed in backward, not kept; values and gradients are those of the unfused lean layers (bit
    for bit where nothing is narrowed) and of PEFT (to rounding)."""
    from peft import LoraConfig, get_peft_model

    def build(fused: bool, lean_layers: bool = True):
        mlp = _mlp("Gemma3MLP", dtype)
        if lean_layers:
            lean.install(mlp)
        torch.manual_seed(4)
        model = get_peft_model(torch.nn.Sequential(mlp), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                    target_modules=["gate_proj", "up_proj", "down_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.1)
        if lean_layers:
            assert lean.install_lora(model) == 3
        if not fused:  # a hook on the down projection keeps it a layer of its own
            model.base_model.model[0].down_proj.register_forward_pre_hook(lambda m, a: None)
        return model

    def run(model):
        x = torch.randn(4, 9, 32, generator=torch.Generator().manual_seed(6)).to(dtype).requires_grad_(True)
        if saved is None:
            out, kept = _saved_bytes(lambda: model(x))
        else:  # saved_in's own hooks narrow what is kept (a counting hook inside would replace them)
            with lean.saved_in(saved, model):
                out, kept = model(x), None
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(dtype))
        return out.detach(), kept, [x.grad] + [p.grad for p in model.parameters() if p.requires_grad]

    (out_f, kept_f, grads_f), (out_u, kept_u, grads_u) = run(build(True)), run(build(False))
    (out_p, _, grads_p) = run(build(True, lean_layers=False))
    assert torch.equal(out_f, out_u)
    exact = saved is None  # nothing narrowed: the same operations on the same values
    if exact:
        assert kept_u - kept_f >= 4 * 9 * 96 * dtype.itemsize  # one [tokens x intermediate] tensor less
    tol = 1e-5 if dtype == torch.float32 and exact else 2 ** -6
    for f, u, p in zip(grads_f, grads_u, grads_p):
        assert torch.equal(f, u) if exact else torch.allclose(f, u, rtol=tol, atol=tol * u.abs().max().item())
        assert torch.allclose(f.float(), p.float(), rtol=tol, atol=2 ** -6 * p.abs().max().item())


def test_lora_layer_keeps_peft_forward_where_it_does_not_apply():
    x = torch.randn(2, 48)
    plain, slim = _lora_pair(torch.float32, lora_dropout=0.3)
    assert lean.install_lora(slim) == 1
    torch.manual_seed(9)
    expected = plain(x)
    torch.manual_seed(9)
    assert torch.equal(expected, slim(x))  # an active dropout: PEFT's path, the same random mask
    plain.eval(), slim.eval()
    with torch.no_grad():  # evaluation and generation: PEFT's path, bit for bit
        assert torch.equal(plain(x), slim(x))
    with slim.disable_adapter(), plain.disable_adapter():
        assert torch.equal(plain(x), slim(x))
    dora_plain, dora_slim = _lora_pair(torch.float32, lora_dropout=0.0, use_dora=True)
    lean.install_lora(dora_slim)
    assert torch.equal(dora_plain(x), dora_slim(x))


def test_a_training_run_uses_it_and_its_adapter_loads_with_plain_peft(tiny_gemma_dir, tmp_path):
    """The cpu profile's shape: a bf16 Gemma 3 with rsLoRA on every projection. The run installs the lean layers,
    trains to PEFT's losses (to bf16 rounding), and writes an adapter that plain PEFT loads to the same logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, TrainerCallback

    from apps.translator.task import TASK
    from shared import runs
    from shared.train import train

    from .test_methods import Probe, _cfg, data  # noqa: F401  (data: the module fixture's function)

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    counted = []

    class Count(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            counted.append(sum("_lean" in vars(m) and hasattr(m, "lora_A") for m in model.modules()))

    def run(name, lean_lora):
        probe = Probe(tiny_gemma_dir)
        extra = {"model.dtype": "bfloat16", "train.bf16": "true", "lora.use_rslora": True,
                 "lora.target_modules": [], "lora.dropout": 0.0, "train.lean_lora": lean_lora}
        out = train(TASK, _cfg(tiny_gemma_dir, pairs, tmp_path / name, **extra), tmp_path / name, "t",
                    callbacks=(probe.callback(), Count()))
        return out, probe, [p["loss"] for p in runs.Run.load(out).record.loss_curve if "loss" in p]

    lean_run, lean_probe, lean_losses = run("lean", True)
    peft_run, peft_probe, peft_losses = run("peft", False)
    assert counted == [2 * 7, 0]  # q, k, v, o, gate, up, down in each of the 2 layers
    assert lean_losses[0] == pytest.approx(peft_losses[0], rel=1e-2)
    assert lean_losses == pytest.approx(peft_losses, rel=5e-2)

    def reload_gap(run_dir, probe):
        """How far plain PEFT's load of the saved adapter is from the trained model's logits."""
        base = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, dtype=torch.bfloat16)
        model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
        with torch.no_grad():
            return (model(input_ids=probe.ids).logits.float() - probe.logits).abs().max().item()

    # bf16 logits differ by ~0.01 between the trained model and the reloaded one on PEFT's own path too
    assert reload_gap(lean_run, lean_probe) <= 2 * reload_gap(peft_run, peft_probe) + 1e-2


def write_pairs(path):
    from .conftest import PAIRS, write_jsonl
    return write_jsonl(path, [{"en": e, "ko": k} for e, k in PAIRS])
