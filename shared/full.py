"""Full fine-tuning of a small model's body (train.method = full): every weight of the transformer layers and
their norms trains; the token embeddings, and the output layer tied to them, stay frozen. The run writes
model/, a plain transformers model folder (config.json, safetensors, tokenizer), instead of adapter/.

Why the embeddings stay frozen: on Gemma 3 270M they are 168M of the 268M weights (262k tokens x 640), so
training them would more than double Adam's state, and the answer-only loss over the output vocabulary
(shared/vocab.py) reads a frozen output layer. Why the trained weights are kept in float32 while the matmuls
run in bf16 (autocast): bf16 keeps 8 bits of mantissa, so an update of lr 5e-5 on a weight of 0.03 (one ulp
there is 1.2e-4) would round away, and training would stall without a sign.

For inference the folder is loaded onto the base model it was trained from (`attach`), keeping a copy of the
base's values of the weights that changed, so that base and fine-tuned outputs still come from one loaded
model (`base_weights`, as PEFT's disable_adapter does for LoRA). Outside the project it loads with
AutoModelForCausalLM.from_pretrained(run/model).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .config import ConfigError

MODEL_DIR = "model"


def frozen_parameters(model) -> set[int]:
    """ids of the parameters full fine-tuning leaves frozen: the input embeddings and the output layer."""
    frozen = {id(p) for p in model.get_input_embeddings().parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        frozen |= {id(p) for p in head.parameters()}
    return frozen


def prepare(model) -> int:
    """Make the body trainable in float32 and freeze the embeddings; returns the number of trainable weights."""
    frozen = frozen_parameters(model)
    trainable = 0
    for p in model.parameters():
        train = id(p) not in frozen and p.is_floating_point()
        p.requires_grad_(train)
        if train:
            if p.dtype != torch.float32:
                p.data = p.data.float()
            trainable += p.numel()
    return trainable


def save(model, tokenizer, out: Path) -> None:
    """model/ in the dtype of the frozen embeddings (the base's dtype), with the tokenizer."""
    dtype = model.get_input_embeddings().weight.dtype
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    model.save_pretrained(str(out), state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(Path(model_dir).glob("*.safetensors"))


def attach(model, model_dir: Path):
    """Load the weights of model_dir into `model` (its base), keeping the base's values of every weight that
    differs, for `base_weights`. Refuses a folder whose tensors do not fit the base."""
    from safetensors import safe_open

    files = weight_files(model_dir)
    if not files:
        raise ConfigError(f"{model_dir} has no .safetensors weights (a .bin file is a pickle and is not loaded)")
    params = dict(model.named_parameters())
    base: dict[str, torch.Tensor] = {}
    seen = set()
    with torch.no_grad():
        for file in files:
            with safe_open(str(file), "pt") as f:
                for name in f.keys():
                    p = params.get(name)
                    if p is None:
                        raise ConfigError(f"{file}: weight {name} is not in the base model; the folder was "
                                          "trained on another architecture")
                    value = f.get_tensor(name)
                    if value.shape != p.shape:
                        raise ConfigError(f"{file}: weight {name} has shape {tuple(value.shape)}, the base's is "
                                          f"{tuple(p.shape)}")
                    seen.add(name)
                    value = value.to(p.dtype)
                    if not torch.equal(value, p.data):
                        base[name] = p.data.clone()
                        p.data.copy_(value)
    frozen = frozen_parameters(model)
    missing = [n for n in params if n not in seen and id(params[n]) not in frozen]
    if missing:
        raise ConfigError(f"{model_dir} lacks {len(missing)} weight(s) of the model, e.g. {missing[0]}")
    model._base_values = base
    return model


def detach(model):
    """The fine-tuned model without the kept base values (for an export: one copy of the weights)."""
    model.__dict__.pop("_base_values", None)
    return model


@contextlib.contextmanager
def base_weights(model):
    """Inside the block a model loaded by `attach` holds its base's weights; no-op for any other model."""
    base = getattr(model, "_base_values", None)
    if not base:
        yield model
        return
    params = dict(model.named_parameters())

    def swap():
        for name, param in params.items():
            if name in base:
                param.data, base[name] = base[name], param.data

    swap()
    try:
        yield model
    finally:
        swap()
