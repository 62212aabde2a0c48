"""The one-pass answer search (shared.generate.candidates) against Hugging Face beam search on a tiny random model:
same answers and log-probabilities, the same with any batch size, and each prompt read once."""
import pytest
import torch

from shared.generate import candidates, stop_ids
from tests.conftest import favour_tokens

PROMPTS = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\nPrice is $" for q in (
    "Kettle", "A much longer listing: stainless steel kettle, 1.7 litres, auto shut-off, two-year warranty",
    "Lamp, brass", "Desk", "Mid length listing with a few words", "Oak chair, set of four, hand finished",
    "Rug", "Cast iron pan, 12 inch", "Bike", "Garden hose, 50 ft, brass fittings, kink free")]


def _load(cfg):
    from shared.models import load

    model, tok, fmt = load(cfg, training=False)
    return model.eval(), tok, fmt


def _price_like(model, tok, fmt):
    """Favours digits, '.' and the end token: short answers that end at different steps, like a fine-tuned
    price model's."""
    return favour_tokens(model, tok, fmt, {**{t: 5.0 for t in "0123456789."}, "eot": 5.0})


def _hf_beams(model, tok, fmt, prompt: str, width: int, max_new_tokens: int,
              ends: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    enc = tok(prompt, add_special_tokens=False, return_tensors="pt")
    eos = stop_ids(tok, fmt) + [tok.convert_tokens_to_ids(t) for t in ends]
    out = model.generate(**enc, num_beams=width, num_return_sequences=width, length_penalty=0.0,
                         early_stopping=False, do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=tok.pad_token_id, temperature=None,
                         top_p=None, top_k=None, output_scores=True, return_dict_in_generate=True)
    texts = tok.batch_decode(out.sequences[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [(t.strip(), s) for t, s in zip(texts, out.sequences_scores.tolist())]


def _assert_same(ours, theirs, tol=1e-4):
    assert [t for t, _ in ours] == [t for t, _ in theirs]
    assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=tol)


def _count_prefill_rows(model):
    """Rows of every forward call that reads more than one token (a prompt), counted as they come."""
    rows = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:
            rows.append(ids.shape[0])
    return rows, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("shape, ends", [("random", ()), ("price-like", ()), ("price-like", (".",))])
@pytest.mark.parametrize("width", [2, 4])
def test_same_answers_and_scores_as_hf_beam_search(tiny_model_cfg, shape, ends, width):
    model, tok, fmt = _load(tiny_model_cfg)
    if shape == "price-like":
        model = _price_like(model, tok, fmt)
    ours = candidates(model, tok, fmt, PROMPTS, n=width, max_new_tokens=7, batch_size=4, ends=ends)
    for prompt, found in zip(PROMPTS, ours):
        assert len(found) == width
        _assert_same(found, _hf_beams(model, tok, fmt, prompt, width, 7, ends))
    if shape == "price-like":  # answers that end on an end token, at different lengths, in the same batch
        assert len({len(t) for found in ours for t, _ in found}) > 2
    if ends:
        assert any(t.endswith(".") for found in ours for t, _ in found)


def test_batch_size_changes_nothing(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    model = _price_like(model, tok, fmt)
    alone = candidates(model, tok, fmt, PROMPTS, n=4, max_new_tokens=7, batch_size=1)
    batched = candidates(model, tok, fmt, PROMPTS, n=4, max_new_tokens=7, batch_size=8)
    for a, b in zip(alone, batched):
        _assert_same(b, a, tol=1e-5)


def test_each_prompt_is_read_once(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    rows, handle = _count_prefill_rows(model)
    candidates(model, tok, fmt, PROMPTS, n=4, max_new_tokens=5, batch_size=4)
    assert sum(rows) == len(PROMPTS) and len(rows) == 3  # batches of 4, 4, 2; every later call reads 1 token
    rows.clear()
    _hf_beams(model, tok, fmt, PROMPTS[0], 4, 5)
    handle.remove()
    assert sum(rows) == 4  # Hugging Face beam search reads the prompt once per beam


def test_width_below_two_is_refused(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    with pytest.raises(ValueError, match="at least 2"):
        candidates(model, tok, fmt, PROMPTS[:1], n=1, max_new_tokens=4)
