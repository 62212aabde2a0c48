"""The output vocabulary (shared/vocab.py): which tokens it keeps, the limited output layer, the loss over it,
and a run trained with it: decoding stays inside it, the base comparison and exports use the full layer."""
import pytest
import torch

from shared import runs, vocab
from shared.config import GenerateSettings, resolve
from shared.generate import base_model, generate, load_run
from shared.loss import FULL_EVERY, completion_loss

from .test_export import PROMPTS, make_run
from .test_generate import _load


@pytest.mark.slow
def test_answer_vocabulary_keeps_the_answers_scripts(gemma_tokenizer):
    tok = gemma_tokenizer
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    korean = vocab.answer_vocabulary(tok, [encode("안녕하세요, 저는 IBM에서 일하는 개발자입니다.") + [eot]], [eot])
    kept = set(korean)
    assert eot in kept and set(encode("감사합니다! 2024년 3월")) <= kept  # Hangul not in the answers, digits
    pieces = {tok.decode([i]) for i in korean}
    assert "Hello" not in pieces and " Samsung" not in pieces  # Latin is a minor script here: its long tokens go,
    assert set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") <= pieces  # but any name can be spelled
    assert not set(encode("Привет")) & kept and not set(encode("नमस्ते")) & kept
    assert 0.02 < len(korean) / len(tok) < 0.25
    # names in the answers may use every Latin letter: Latin words stay out all the same
    korean_text = "안녕하세요, 저는 서울에 있는 회사에서 일하는 개발자입니다. 오늘은 날씨가 아주 좋습니다. " * 6
    names = encode("The quick brown fox jumps over the lazy dog")
    with_names = set(vocab.answer_vocabulary(tok, [encode(korean_text) + [eot], names + [eot]], [eot]))
    assert set(names) <= with_names
    assert tok.convert_tokens_to_ids("▁Hello") not in with_names
    assert tok.convert_tokens_to_ids("▁Samsung") not in with_names
    prices = set(vocab.answer_vocabulary(tok, [encode("24.00") + [eot], encode("1,299.99") + [eot]], [eot]))
    assert set(encode("7305.50")) <= prices and not set(encode("about")) & prices and len(prices) < 0.03 * len(tok)


def test_limited_output_layer_equals_the_full_one_on_its_tokens(tiny_model_cfg):
    model, tok, fmt = _load(tiny_model_cfg)
    ids = list(range(0, len(tok), 3)) + [tok.eos_token_id]
    ids = sorted(set(ids))
    hidden = torch.randn(2, 5, model.config.hidden_size)
    full = model.lm_head(hidden)
    limited = vocab.limit_output_layer(model, ids)
    out = model.get_output_embeddings()(hidden)
    assert model.get_output_embeddings() is limited
    assert torch.allclose(out[..., ids], full[..., ids], atol=1e-5)
    outside = torch.ones(out.shape[-1], dtype=torch.bool)
    outside[ids] = False
    assert (out[..., outside] == vocab.LimitedOutputLayer.FLOOR).all()
    answers = generate(model, tok, fmt, PROMPTS, GenerateSettings(max_new_tokens=10, batch_size=3))
    allowed = {tok.decode([i]) for i in ids}
    assert all(ch in allowed for a in answers for ch in a)  # the byte-level tiny tokenizer: one char a token
    with base_model(model):  # the base comparison decodes over everything again
        assert torch.allclose(model.get_output_embeddings()(hidden), full, atol=1e-5)


def test_decoding_over_the_limited_columns_equals_decoding_over_full_rows(tiny_model_cfg, monkeypatch):
    import contextlib

    from shared.generate import candidates, stop_ids

    model, tok, fmt = _load(tiny_model_cfg)
    ids = sorted(set(range(0, len(tok), 2)) | {tok.convert_tokens_to_ids("\n")} | set(stop_ids(tok, fmt)))
    vocab.limit_output_layer(model, ids)
    settings = [GenerateSettings(max_new_tokens=12, batch_size=3, num_beams=beams, beam_pick=pick)
                for beams, pick in ((1, "score"), (3, "score"), (3, "consensus"))]
    compacted = []
    real = vocab.compact_logits

    @contextlib.contextmanager
    def spy(model):
        with real(model) as layer:
            compacted.append(layer is not None)
            yield layer

    monkeypatch.setattr(vocab, "compact_logits", spy)
    columns = [generate(model, tok, fmt, PROMPTS, gen) for gen in settings]
    found = candidates(model, tok, fmt, PROMPTS, 3, 6, batch_size=2)
    assert compacted and all(compacted)
    monkeypatch.setattr(vocab, "compact_logits", lambda model: contextlib.nullcontext())  # full rows, -1e4 outside
    assert columns == [generate(model, tok, fmt, PROMPTS, gen) for gen in settings]
    rows = candidates(model, tok, fmt, PROMPTS, 3, 6, batch_size=2)
    assert [[text for text, _ in c] for c in found] == [[text for text, _ in c] for c in rows]
    assert all(abs(a - b) < 1e-4 for c, d in zip(found, rows) for (_, a), (_, b) in zip(c, d))
    assert any(a for a in columns[0])


def test_loss_over_the_output_vocabulary(tiny_model_cfg):
    model, tok, _ = _load(tiny_model_cfg)
    torch.manual_seed(0)
    ids = torch.randint(5, 200, (2, 12))
    labels = ids.clone()
    labels[:, :6] = -100
    keep = sorted(set(ids[:, 6:].flatten().tolist()) | set(range(100, 160)))
    ours = completion_loss(model, {"input_ids": ids, "labels": labels},
                           vocab=vocab.OutputVocab(keep, model.config.vocab_size))
    logits = model(input_ids=ids).logits[:, :-1][labels[:, 1:] != -100]
    targets = labels[:, 1:][labels[:, 1:] != -100]
    # each answer's last token and every FULL_EVERY-th token over the whole vocabulary, the rest over `keep`
    full = torch.zeros(len(targets), dtype=torch.bool)
    for start in (0, 6):  # two answers of 6 tokens: their tokens 0, FULL_EVERY, ... and their last one
        full[start:start + 6:FULL_EVERY] = True
        full[start + 5] = True
    expected = (torch.nn.functional.cross_entropy(logits[full], targets[full], reduction="sum")
                + torch.nn.functional.cross_entropy(logits[~full][:, keep], torch.tensor(
                    [keep.index(t) for t in targets[~full].tolist()]), reduction="sum")) / len(targets)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert ours < completion_loss(model, {"input_ids": ids, "labels": labels})  # fewer tokens share the mass


def test_a_run_with_an_output_vocabulary_decodes_inside_it(tiny_model_dir, tmp_path):
    run_dir = make_run(tiny_model_dir, tmp_path / "run")
    run = runs.Run.load(run_dir)
    cfg = resolve(cli={**{k: v for k, v in _flat(run.record.config).items()}, "train.output_vocab": "answers"})
    run.record.config = cfg.to_dict()
    run.save()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = sorted({tok.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"} | {tok.eos_token_id})
    vocab.save(run_dir, ids, len(tok))
    model, tok, fmt, _ = load_run(runs.Run.load(run_dir))
    answers = generate(model, tok, fmt, PROMPTS, GenerateSettings(max_new_tokens=10, batch_size=3))
    assert any(answers) and all(c.isascii() and c.islower() for a in answers for c in a)
    plain, *_ = load_run(runs.Run.load(run_dir), limit_vocab=False)  # what export merges: the standard layer
    assert isinstance(plain.get_base_model().get_output_embeddings(), torch.nn.Linear)
    assert not any("head.head" in k for k in plain.state_dict())


def test_a_damaged_vocabulary_file_is_one_line(tmp_path):
    from shared.config import ConfigError

    (tmp_path / vocab.FILE).write_text('{"ids": ["a"]}', encoding="utf-8")
    with pytest.raises(ConfigError, match="output_vocab.json: field 'ids'"):
        vocab.load(tmp_path)


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
