"""Decoding options: ending an answer at its first line break, the loop guard, beam search in generate()."""
import dataclasses
import json

import pytest
import torch

from shared.config import GenerateSettings
from shared.generate import AnswerEnds, _pick, candidates, consensus, generate, line_tables, loop_start

from .conftest import ROOT, make_tokenizer
from .test_generate import PROMPTS, _load

SETTINGS = GenerateSettings(max_new_tokens=40, batch_size=3)


def test_loop_start_finds_the_second_copy_of_a_trailing_loop():
    assert loop_start([5] * 12) == 1 and loop_start([5] * 11) is None  # 12 tokens at least
    unit = [1, 2, 3, 4]
    assert loop_start([9, 8] + unit * 3) == 2 + 4  # keep the text and one copy of the unit
    assert loop_start([9, 8] + unit * 2) is None  # twice is not a loop
    assert loop_start([9, 8] + unit * 3 + [7]) is None  # the loop must be at the end
    assert loop_start([1, 2] * 6) == 2  # the shortest unit wins: [1, 2] rather than [1, 2, 1, 2]
    assert loop_start(list(range(100))) is None and loop_start([]) is None


def _scripted(model, tokenizer, script: str):
    """Make the model say `script` one token per step (then end-of-text), whatever the prompt; returns the list
    of steps taken (one per output-layer call)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.tokenize(script)]
    calls = []

    def hook(module, args, out):
        step = len(calls)
        calls.append(step)
        logits = torch.zeros_like(out)
        logits[..., ids[step] if step < len(ids) else tokenizer.eos_token_id] = 10.0
        return logits

    model.lm_head.register_forward_hook(hook)
    return calls


def test_first_line_ends_the_answer_at_its_first_line_break_after_text(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    calls = _scripted(model, tok, "\nab\ncdefgh")
    assert generate(model, tok, fmt, PROMPTS[:1], SETTINGS) == ["ab\ncdefgh"]
    calls.clear()
    assert generate(model, tok, fmt, PROMPTS[:1], dataclasses.replace(SETTINGS, first_line=True)) == ["ab"]
    assert len(calls) == 4  # "\n", "a", "b", "\n": the leading line break does not end it, the next one does


def test_loop_guard_stops_a_loop_and_keeps_one_copy(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    calls = _scripted(model, tok, "ok " + "xyz" * 20)
    assert generate(model, tok, fmt, PROMPTS[:1], SETTINGS) == ["ok " + "xyz" * 12 + "x"]  # to the budget of 40
    calls.clear()
    guarded = dataclasses.replace(SETTINGS, loop_guard=True)
    assert generate(model, tok, fmt, PROMPTS[:1], guarded) == ["ok xyz"]
    assert len(calls) == 3 + 12  # stopped as soon as the repeats spanned 12 tokens


def test_loop_guard_and_first_line_leave_other_rows_of_the_batch_alone(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    plain = generate(model, tok, fmt, PROMPTS, SETTINGS)
    both = generate(model, tok, fmt, PROMPTS, dataclasses.replace(SETTINGS, loop_guard=True, first_line=True))
    for p, b in zip(plain, both):  # the guarded answer is the plain one, cut
        assert p.startswith(b) and "\n" not in b.strip()


def test_beam_search_in_generate_is_the_best_candidate(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    best = [c[0][0] for c in candidates(model, tok, fmt, PROMPTS, n=3, max_new_tokens=8, batch_size=2)]
    beams = dataclasses.replace(SETTINGS, max_new_tokens=8, num_beams=3, batch_size=2)
    assert generate(model, tok, fmt, PROMPTS, beams) == best


@pytest.mark.slow
def test_answer_ends_reads_text_not_tokens(gemma_tokenizer):
    ends = AnswerEnds(gemma_tokenizer, 0, first_line=True, loop_guard=False)
    ids = lambda text: gemma_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ends.ended(ids("안녕하세요.\n다음 줄")) and ends.ended(ids("Hello\n"))
    assert not ends.ended(ids("\n\n안녕하세요")) and not ends.ended(ids("안녕하세요"))


def _line_tables_by_batch_decode(tokenizer):
    """The tables' definition, decoded the slow way: every token through batch_decode."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return (torch.tensor(["\n" in t for t in texts]), torch.tensor([bool(t.split("\n")[0].strip()) for t in texts]),
            torch.tensor([bool(t.strip()) for t in texts]))


def _fresh_line_tables(tokenizer):
    tokenizer.__dict__.pop("_ft_line_tables", None)  # computed now, not kept from an earlier test
    return line_tables(tokenizer)


def test_line_tables_match_decoding_each_token():
    tokenizer = make_tokenizer()
    for ours, reference in zip(_fresh_line_tables(tokenizer), _line_tables_by_batch_decode(tokenizer)):
        assert torch.equal(ours, reference)
    breaks, leads, visible = line_tables(tokenizer)
    newline, space, letter = (tokenizer.convert_tokens_to_ids(t) for t in ("Ċ", "Ġ", "a"))
    assert breaks[newline] and not leads[newline] and not visible[space] and visible[letter] and leads[letter]


@pytest.mark.slow
def test_line_tables_of_gemma_match_decoding_each_token(gemma_tokenizer):
    tables = _fresh_line_tables(gemma_tokenizer)
    for ours, reference in zip(tables, _line_tables_by_batch_decode(gemma_tokenizer)):
        assert torch.equal(ours, reference)
    assert 0 < int(tables[0].sum()) < 1000  # Gemma has tokens of line breaks, and few


@pytest.mark.slow
def test_no_reference_translation_counts_as_a_loop(gemma_tokenizer):
    """The guard must not cut a normal sentence: no Korean reference of the shipped data ends in a loop."""
    refs = [json.loads(line)["ko"] for split in ("train", "valid", "test")
            for line in (ROOT / "data" / "translator" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(refs) > 1000
    looping = [r for r in refs if loop_start(gemma_tokenizer(r, add_special_tokens=False)["input_ids"]) is not None]
    assert looping == []


def test_beam_picks_score_length_and_consensus():
    found = [(-2.0, [1, 2]), (-2.5, [3, 4, 5, 6, 7]), (-3.0, [8, 9, 10])]
    texts = {2: "xyz qqq", 7: "the cat sat on the mat", 10: "the cat sat on a mat"}
    pick = lambda how: _pick(found, dataclasses.replace(SETTINGS, beam_pick=how), lambda t: texts[t[-1]])  # noqa: E731
    assert pick("score") == [1, 2]  # the most likely
    assert pick("length") == [3, 4, 5, 6, 7]  # -0.5 a token against -1.0 and -1.0
    assert pick("consensus") == [3, 4, 5, 6, 7]  # the two cat sentences agree; of them, the more likely one
    assert consensus(["b", "a", "a"]) == 1 and consensus(["a", "b"]) == 0  # ties go to the more likely


def test_consensus_pick_is_one_of_the_beams_and_compares_first_lines(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    found = candidates(model, tok, fmt, PROMPTS, n=4, max_new_tokens=8, batch_size=2)
    picked = generate(model, tok, fmt, PROMPTS, dataclasses.replace(
        SETTINGS, max_new_tokens=8, num_beams=4, batch_size=2, beam_pick="consensus"))
    for answer, beams in zip(picked, found):
        assert answer in [text for text, _ in beams]
    # what is compared is the first line, the part a product keeps
    gen = dataclasses.replace(SETTINGS, beam_pick="consensus", first_line=True)
    lines = {1: "same\nnoise one", 2: "other", 3: "same\nnoise two three"}
    assert _pick([(-1.0, [2]), (-2.0, [1]), (-3.0, [3])], gen, lambda t: lines[t[0]]) == [1]


def test_beam_search_ends_at_the_first_line_break_after_text(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    calls = _scripted(model, tok, "\nab\ncdefgh")
    beams = dataclasses.replace(SETTINGS, num_beams=2, batch_size=1)
    assert generate(model, tok, fmt, PROMPTS[:1], beams) == ["ab\ncdefgh"]
    calls.clear()
    # the leading line break does not end it, the one after "ab" does
    assert generate(model, tok, fmt, PROMPTS[:1], dataclasses.replace(beams, first_line=True)) == ["ab"]
