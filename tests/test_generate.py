import dataclasses

import pytest
import torch

from shared.config import GenerateSettings
from shared.generate import base_model, candidates, generate, prompt_states, stop_ids
from tests.conftest import favour_tokens

PROMPTS = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nA much longer question about trains and stations?<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nMid length one.<|im_end|>\n<|im_start|>assistant\n"]
GREEDY = GenerateSettings(max_new_tokens=12, batch_size=3)


def _load(cfg):
    from shared.models import load

    model, tok, fmt = load(cfg, training=False)
    return model.eval(), tok, fmt


def test_batched_equals_one_at_a_time(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    batched = generate(model, tok, fmt, PROMPTS, GREEDY)
    single = [generate(model, tok, fmt, [p], dataclasses.replace(GREEDY, batch_size=1))[0] for p in PROMPTS]
    assert batched == single and any(batched)


def test_stops_on_end_of_turn_and_respects_budgets(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    eot = tok.convert_tokens_to_ids(fmt.end_of_turn)
    assert eot in stop_ids(tok, fmt)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids("a")] = 5.0  # say "a" ...
    model.lm_head = head
    out = generate(model, tok, fmt, PROMPTS[:1], GREEDY, budgets=[3])
    assert out == ["aaa"]  # ...until the per-prompt budget stops it
    with torch.no_grad():
        head.bias[eot] = 10.0  # now end-of-turn is the most likely token: stop at once
    assert generate(model, tok, fmt, PROMPTS[:1], GREEDY) == [""]


def test_base_outputs_come_from_the_same_weights_with_adapter_off(tiny_model_cfg):
    from peft import LoraConfig, get_peft_model

    model, tok, fmt = _load(tiny_model_cfg)
    plain = generate(model, tok, fmt, PROMPTS, GREEDY)
    torch.manual_seed(0)
    tuned = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                             init_lora_weights=False, task_type="CAUSAL_LM")).eval()
    with_adapter = generate(tuned, tok, fmt, PROMPTS, GREEDY)
    with base_model(tuned):
        without = generate(tuned, tok, fmt, PROMPTS, GREEDY)
    assert without == plain and with_adapter != plain


def test_output_layer_gets_contiguous_input(tiny_model_cfg):
    """generate() slices the last hidden state; a strided input makes torch expand the whole output weight
    per batch row (a multi-GB copy with a 262k vocabulary). load() makes the input contiguous first."""
    model, tok, fmt = _load(tiny_model_cfg)
    seen = []
    model.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(3, 5, model.config.hidden_size)[:, -1:, :]
    assert not hidden.is_contiguous()
    model.lm_head(hidden)
    assert seen == [True]


def test_prompt_states_are_the_last_tokens_state_whatever_the_padding(tiny_model_cfg):
    """Batched, left-padded states equal each prompt's own final hidden state (the one the output layer reads),
    in input order, with the adapter applied."""
    from peft import LoraConfig, get_peft_model

    model, tok, fmt = _load(tiny_model_cfg)
    torch.manual_seed(0)
    tuned = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=False, task_type="CAUSAL_LM")).eval()
    batched = prompt_states(tuned, tok, PROMPTS, batch_size=3)
    assert batched.shape == (3, tuned.config.hidden_size) and batched.dtype == torch.float32
    with torch.no_grad():
        for row, prompt in zip(batched, PROMPTS):
            ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            alone = tuned(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            torch.testing.assert_close(row, alone, rtol=1e-4, atol=1e-5)
        with base_model(tuned):
            assert not torch.allclose(prompt_states(tuned, tok, PROMPTS[:1]), batched[:1])
    # the beam search's own prefill gives the same states, without a second pass over the prompts
    from_search = torch.full_like(batched, float("nan"))
    found = candidates(tuned, tok, fmt, PROMPTS, 2, 3, batch_size=2, states=from_search)
    torch.testing.assert_close(from_search, batched, rtol=1e-4, atol=1e-5)
    assert found == candidates(tuned, tok, fmt, PROMPTS, 2, 3, batch_size=2)


def test_beam_candidates_are_ranked_and_width_one_is_greedy(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    ranked = candidates(model, tok, fmt, PROMPTS, n=4, max_new_tokens=6, batch_size=2)
    assert [len(c) for c in ranked] == [4, 4, 4]
    for c in ranked:
        scores = [s for _, s in c]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
        assert len({t for t, _ in c}) > 1  # different answers, not one answer four times
    alone = [candidates(model, tok, fmt, [p], n=4, max_new_tokens=6)[0] for p in PROMPTS]
    assert [[t for t, _ in c] for c in alone] == [[t for t, _ in c] for c in ranked]  # batching changes nothing


def _hf_generate(model, tok, fmt, prompts, gen, ends=None) -> list[str]:
    """model.generate on the same left-padded batch: the reference the batch-shrinking greedy loop must equal."""
    from shared.generate import AnswerEnds, _left_padded_batches, generation_kwargs

    out = [""] * len(prompts)
    for idx, ids, mask, width in _left_padded_batches(tok, prompts, gen.batch_size):
        stop = AnswerEnds.for_settings(tok, gen, width)
        seqs = model.generate(input_ids=ids, attention_mask=mask, stopping_criteria=[stop] if stop else None,
                              **generation_kwargs(tok, fmt, gen))
        for row, i in enumerate(idx):
            out[i] = tok.decode(seqs[row, width:], skip_special_tokens=True).strip()
    return out


ENDS_EARLY = {"x": 5.0, "\n": 6.0, "eot": 4.0}
MANY = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in (
    "Hi", "A much longer question about trains and stations?", "Mid length one.", "Why?", "Tell me a story",
    "Numbers: 1 2 3", "Another prompt of some length here", "ok")]


@pytest.mark.parametrize("settings", [
    dict(),                                          # stop tokens and the budget only
    dict(first_line=True),                           # rows that end at a line break leave the batch
    dict(repetition_penalty=1.05),                   # the logits processors model.generate would add
    dict(no_repeat_ngram_size=6, first_line=True),
])
def test_greedy_equals_model_generate_while_ended_rows_leave_the_batch(tiny_model_cfg, settings):
    model, tok, fmt = _load(tiny_model_cfg)
    model = favour_tokens(model, tok, fmt, ENDS_EARLY)
    gen = dataclasses.replace(GREEDY, max_new_tokens=10, batch_size=8, **settings)
    rows = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    ours = generate(model, tok, fmt, MANY, gen)
    hook.remove()
    assert ours == _hf_generate(model, tok, fmt, MANY, gen)
    assert len(set(map(len, ours))) > 2  # answers of different lengths in one batch
    assert rows[0] == len(MANY) and min(rows) < len(MANY)  # ...and the batch shrank as they ended
    assert rows == sorted(rows, reverse=True)


def test_greedy_on_gemma3_with_sliding_window_layers(tiny_gemma_dir):
    """The cache of a model with sliding-window layers shrinks with the batch too (prompts past the window)."""
    from shared.config import ModelConfig
    from shared.models import load

    model, tok, fmt = load(ModelConfig(name=str(tiny_gemma_dir), chat_template="chatml", dtype="float32",
                                       max_length=256), training=False)
    model = favour_tokens(model.eval(), tok, fmt, ENDS_EARLY)
    prompts = [p.replace("user\n", "user\n" + "long context " * (k * 3)) for k, p in enumerate(MANY)]
    gen = dataclasses.replace(GREEDY, max_new_tokens=12, batch_size=8)
    assert generate(model, tok, fmt, prompts, gen) == _hf_generate(model, tok, fmt, prompts, gen)


def test_a_generation_config_with_its_own_processors_decodes_with_model_generate(tiny_model_cfg):
    import shared.generate as g

    model, tok, fmt = _load(tiny_model_cfg)
    assert g._own_greedy_applies(model)
    model.generation_config.suppress_tokens = [tok.convert_tokens_to_ids("a")]
    assert not g._own_greedy_applies(model)
    model.generation_config.suppress_tokens = None
    model._ft_unsloth_generation = True
    assert not g._own_greedy_applies(model)


def test_beam_search_writes_each_step_into_room_left_by_the_reorder(tiny_gemma_dir, monkeypatch):
    """Beam search's reorder leaves one free position per cache layer and the next step writes there, instead of
    transformers concatenating the whole cache again; the answers and scores are those of transformers' own
    reorder, also for prompts whose sliding-window layers slide (the tiny Gemma's window is 32 tokens)."""
    import shared.generate as g
    from shared.config import ModelConfig
    from shared.models import load

    model, tok, fmt = load(ModelConfig(name=str(tiny_gemma_dir), chat_template="chatml", dtype="float32",
                                       max_length=256), training=False)
    model = model.eval()
    prompts = MANY[:4] + [p.replace("user\n", "user\n" + "long context " * 4) for p in MANY[4:]]
    written = []
    in_room = g._update_in_room
    monkeypatch.setattr(g, "_update_in_room", lambda layer, *a, **kw: written.append(layer) or in_room(layer, *a, **kw))
    ours = candidates(model, tok, fmt, prompts, 3, 24, batch_size=2)
    assert {type(layer).__name__ for layer in written} == {"DynamicLayer", "DynamicSlidingWindowLayer"}
    monkeypatch.setattr(g, "_reorder_with_room", lambda cache, rows: cache.reorder_cache(rows))
    theirs = candidates(model, tok, fmt, prompts, 3, 24, batch_size=2)
    assert [[text for text, _ in c] for c in ours] == [[text for text, _ in c] for c in theirs]
    assert [s for c in ours for _, s in c] == pytest.approx([s for c in theirs for _, s in c], abs=1e-4)
    assert max(len(tok(p)["input_ids"]) for p in prompts) + 24 > 32  # some prompts run past the window
