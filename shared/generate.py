"""Generation: load a run's adapter on its base, batched decoding, streaming, base vs fine-tuned on one copy.

Batching sorts prompts by length (less padding), pads on the left (so every row's last token is the
prompt's last token), and stops each sequence on the family's end-of-turn token.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import types
from typing import Iterable, Iterator

import torch

from . import full, models, runs, vocab
from .chat import ChatFormat
from .config import ConfigError, GenerateSettings, RunConfig, apply
from .log import log


def load_run(run: runs.Run, model_overrides: dict | None = None, limit_vocab: bool = True):
    """(model with the run's adapter, or its fully fine-tuned weights, tokenizer, chat format, run config).

    model_overrides: model.* settings changed for this load only, e.g. {"quantization": "none"} to put the
    adapter on an unquantized copy of the base (shared/export.py). limit_vocab: decode over the run's output
    vocabulary when it was trained with one (shared/vocab.py); an export keeps the standard output layer."""

    run_dir, record = run.path, run.record
    cfg: RunConfig = run.config()
    if model_overrides:
        apply(cfg, {f"model.{key}": value for key, value in model_overrides.items()})
    weights = run.weights_dir
    _check_weights_folder(weights, run.is_full)
    model, tokenizer, fmt = models.load(cfg.model, training=False)
    if record.base_model:
        differs = models.same_base(record.base_model, models.fingerprint(model))
        if differs:
            raise ConfigError(f"the {weights.name} in {run_dir} was trained on another base model than the one "
                              f"'{cfg.model.name}' now loads ({differs}). Put the original base back at that "
                              "path, or train a new run on this one.")
    try:
        model = full.attach(model, weights) if run.is_full else models.attach_adapter(model, weights)
    except (RuntimeError, ValueError, KeyError) as e:  # shape mismatch, missing target modules
        raise ConfigError(f"the {weights.name} in {run_dir} does not fit the base model '{cfg.model.name}' "
                          f"({e.__class__.__name__}: {str(e).strip().splitlines()[-1][:200]})") from None
    model.eval()
    if limit_vocab and cfg.train.output_vocab == "answers":
        ids = vocab.load(run_dir)
        if ids is None:
            log(f"{run_dir} has no {vocab.FILE}: decoding over the full vocabulary")
        else:
            vocab.limit_output_layer(model, ids)
    if models.resolve_backend(cfg.model) == "unsloth":  # Unsloth's fast generation path, once the adapter is on
        from .unsloth_backend import for_inference
        model = for_inference(model)
    return model, tokenizer, fmt, cfg


def _check_weights_folder(weights, is_full: bool) -> None:
    if is_full:
        if not (weights / "config.json").is_file():
            raise ConfigError(f"{weights} has no config.json")
        return
    if not (weights / "adapter_config.json").is_file():
        raise ConfigError(f"{weights} has no adapter_config.json")
    if not (weights / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickled .bin
        raise ConfigError(f"{weights} has no adapter_model.safetensors; adapter weights are loaded only from "
                          "safetensors (a .bin file is a pickle, and unpickling can run code)")


@contextlib.contextmanager
def base_model(model):
    """Run the base model from the same weights: the LoRA adapter is switched off inside the block (a fully
    fine-tuned body gets the base's weights back, shared/full.py), and the base decodes over its whole
    vocabulary, as it would on its own."""
    with vocab.full_vocabulary(model):
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield model
        else:
            with full.base_weights(model):
                yield model


def stop_ids(tokenizer, fmt: ChatFormat) -> list[int]:
    """End-of-turn (chat products), the base model's end-of-text (plain-text products) and the tokenizer's EOS."""
    ids = [tokenizer.convert_tokens_to_ids(fmt.end_of_turn), tokenizer.convert_tokens_to_ids(fmt.end_of_text),
           tokenizer.eos_token_id]
    return sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})


def generation_kwargs(tokenizer, fmt: ChatFormat, gen: GenerateSettings, max_new_tokens: int | None = None) -> dict:
    budget = min(max_new_tokens, gen.max_new_tokens) if max_new_tokens else gen.max_new_tokens  # never above the cap
    kw = dict(max_new_tokens=budget, do_sample=gen.do_sample,
              eos_token_id=stop_ids(tokenizer, fmt), pad_token_id=tokenizer.pad_token_id,
              repetition_penalty=gen.repetition_penalty)
    if gen.no_repeat_ngram_size:
        kw["no_repeat_ngram_size"] = gen.no_repeat_ngram_size
    if gen.do_sample:
        kw.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
    else:  # silence "temperature is set but do_sample=False" warnings from the model's own generation config
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


def _left_padded_batches(tokenizer, prompts: list[str], batch_size: int):
    """(prompt indices, input_ids, attention_mask, width) per batch: longest prompts first (less padding),
    padded on the left so every row's last token is its prompt's last token."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        yield idx, ids, mask, width


@torch.inference_mode()
def generate(model, tokenizer, fmt: ChatFormat, prompts: list[str], gen: GenerateSettings,
             budgets: list[int | None] | None = None, progress: str | None = None) -> list[str]:
    """Complete every prompt; returns the decoded answers (special tokens removed) in the input order.

    budgets: optional per-prompt cap on new tokens (each batch uses its largest, never above
    gen.max_new_tokens), so a batch does not run on long after every sensible answer has ended.
    gen.num_beams > 1 decodes with beam search (the best beam, see `candidates`); gen.first_line and
    gen.loop_guard end each answer early (see `AnswerEnds`).
    """
    from tqdm.auto import tqdm

    kw = generation_kwargs(tokenizer, fmt, gen)
    beams = beam_width(gen)
    stops = stop_ids(tokenizer, fmt)
    outputs: list[str] = [""] * len(prompts)
    dev = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="ex")
    for idx, ids, mask, width in _left_padded_batches(tokenizer, prompts, gen.batch_size):
        if budgets is not None:
            kw["max_new_tokens"] = min(gen.max_new_tokens, max(budgets[i] or gen.max_new_tokens for i in idx))
        if beams:
            lines = line_tables(tokenizer) if gen.first_line else None
            found = _beams(model, ids.to(dev), mask.to(dev), beams, kw["max_new_tokens"], stops, lines)
            answers = [_pick(found[row], gen, lambda tokens: _answer_text(tokenizer, gen, tokens, stops))
                       for row in range(len(idx))]
        else:
            ends = AnswerEnds.for_settings(tokenizer, gen, width)
            if gen.do_sample or not _own_greedy_applies(model):
                out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                                     stopping_criteria=[ends] if ends else None, **kw)
                answers = out[:, width:].tolist()
            else:
                answers = _greedy(model, ids.to(dev), mask.to(dev), kw["max_new_tokens"], stops, ends,
                                  _greedy_processors(gen))
        for row, i in enumerate(idx):
            outputs[i] = _answer_text(tokenizer, gen, answers[row], stops)
        bar.update(len(idx))
    bar.close()
    return outputs


def beam_width(gen: GenerateSettings) -> int:
    """The beam search width these settings ask for; 0 for greedy decoding or sampling."""
    return gen.num_beams if gen.num_beams > 1 and not gen.do_sample else 0


def _answer_text(tokenizer, gen: GenerateSettings, tokens: list[int], stops: list[int]) -> str:
    if gen.loop_guard:
        tokens = _strip_loop(tokens, {*stops, tokenizer.pad_token_id})
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def _pick(found: list[tuple[float, list[int]]], gen: GenerateSettings, text_of) -> list[int]:
    """The answer (its tokens) that gen.beam_pick keeps of one prompt's beams, `found` = (score, tokens) best
    first. text_of(tokens) gives an answer's text as `generate` returns it."""
    if gen.beam_pick == "length":
        return max(found, key=lambda f: f[0] / max(1, len(f[1])))[1]
    if gen.beam_pick == "consensus" and len(found) > 1:
        texts = [text_of(tokens) for _, tokens in found]
        if gen.first_line:
            texts = ["".join(first_line([t])) for t in texts]
        return found[consensus(texts)][1]
    return found[0][1]


def consensus(texts: list[str]) -> int:
    """The index of the text with the highest total chrF++ against all the others: the minimum-Bayes-risk
    choice among equally weighted candidates (weighting them by their probabilities scored lower on the
    translator: docs/results.md, decoding options). Ties go to the earlier (more likely) text."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF(word_order=2)
    totals = [sum(chrf.sentence_score(text, [other]).score for j, other in enumerate(texts) if j != i)
              for i, text in enumerate(texts)]
    return max(range(len(texts)), key=lambda i: (totals[i], -i))


def line_tables(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(breaks, leads, visible) over the tokenizer's ids: token t's text has a line break; it has visible text
    before its first line break; it has visible text at all. Beam search uses them to end an
    answer at its first line break after some text, as `AnswerEnds` does for greedy decoding. Decoding every
    token once takes time for a 262k vocabulary, so the tables are kept on the tokenizer, and a fast tokenizer's
    backend decodes them in one call: 0.5 s against batch_decode's 1.4 s for Gemma 3 (a start of every command
    that decodes with beams). The two differ only by batch_decode's optional clean-up of spaces before
    punctuation, which changes none of the three answers."""
    tables = getattr(tokenizer, "_ft_line_tables", None)
    if tables is None:
        ids = [[i] for i in range(len(tokenizer))]
        backend = getattr(tokenizer, "backend_tokenizer", None)
        texts = (backend.decode_batch(ids, skip_special_tokens=False) if backend is not None
                 else tokenizer.batch_decode(ids))
        tables = (torch.tensor(["\n" in t for t in texts]),
                  torch.tensor([bool(t.split("\n")[0].strip()) for t in texts]),
                  torch.tensor([bool(t.strip()) for t in texts]))
        tokenizer._ft_line_tables = tables
    return tables


# Generation-config settings that add logits processors to greedy decoding in model.generate; a model whose
# generation config sets any of them is decoded by model.generate itself.
_GREEDY_PROCESSOR_SETTINGS = ("min_length", "min_new_tokens", "bad_words_ids", "suppress_tokens",
                              "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                              "sequence_bias", "exponential_decay_length_penalty", "renormalize_logits",
                              "encoder_repetition_penalty", "epsilon_cutoff", "watermarking_config")


def _own_greedy_applies(model) -> bool:
    """Whether `_greedy` decodes as model.generate would: no Unsloth generation path (it replaces generate and
    the forward's cache handling) and no generation-config setting that adds a logits processor."""
    if getattr(model, "_ft_unsloth_generation", False):
        return False
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    defaults = type(config)()
    return all(getattr(config, key, None) in (None, getattr(defaults, key, None), 0, 1.0, [])
               for key in _GREEDY_PROCESSOR_SETTINGS)


def _greedy_processors(gen: GenerateSettings):
    """The logits processors model.generate builds from these settings for greedy decoding, in its order."""
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    processors = LogitsProcessorList()
    if gen.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(gen.repetition_penalty))
    if gen.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(gen.no_repeat_ngram_size))
    return processors


def _greedy(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, stops: list[int],
            ends: "AnswerEnds | None", processors) -> list[list[int]]:
    """Greedy decoding of one left-padded batch, the tokens model.generate(do_sample=False) would give, but a
    row that has ended (a stop token, `ends`, its budget) leaves the batch and its cache: the remaining rows run
    on alone. model.generate keeps computing finished rows until the last one ends; a base model's answers
    range from a few tokens to the whole budget, so most of that work was thrown away.

    Returns each row's new tokens, the stop token included, as model.generate does."""
    if processors:  # they index the logits by token id: full rows
        return _greedy_loop(model, ids, mask, max_new_tokens, stops, ends, processors, None)
    with vocab.compact_logits(model) as limited:
        return _greedy_loop(model, ids, mask, max_new_tokens, stops, ends, processors, limited)


def _greedy_loop(model, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, stops: list[int],
                 ends: "AnswerEnds | None", processors, limited: vocab.LimitedOutputLayer | None) -> list[list[int]]:
    """_greedy, with `limited` as in `_search` (argmax over the limited columns picks the token the full row's
    argmax picks: every other token's logit is -1e4, and ids are sorted, so ties break the same way)."""
    stop, lengths = set(stops), mask.sum(-1)
    logits, cache = _prefill(model, ids, mask)
    answers: list[list[int]] = [[] for _ in range(ids.shape[0])]
    alive = torch.arange(ids.shape[0], device=ids.device)  # batch rows still decoding, in cache order
    seqs = ids  # prompt + answer so far per alive row: what the logits processors read
    for step in range(max_new_tokens):
        token = (processors(seqs, logits.float()) if processors else logits).argmax(-1)
        if limited is not None:
            token = limited.ids[token]
        seqs = torch.cat([seqs, token[:, None]], dim=-1)
        going = []
        for i, t in zip(alive.tolist(), token.tolist()):
            answers[i].append(t)
            going.append(t not in stop and not (ends is not None and ends.ended(answers[i])))
        if step == max_new_tokens - 1 or not any(going):
            break
        if not all(going):
            keep = torch.tensor(going, device=ids.device).nonzero().view(-1)
            cache.reorder_cache(keep)
            alive, seqs, token = alive[keep], seqs[keep], token[keep]
        attention, positions = _step_inputs(mask, lengths, alive, step)
        logits, cache = _next_logits(model, input_ids=token[:, None], attention_mask=attention,
                                     position_ids=positions, past_key_values=cache)
    return answers


# A loop: the answer ends in one unit of 1..LOOP_MAX_PERIOD tokens repeated at least LOOP_MIN_REPEATS times in
# a row, LOOP_MIN_TOKENS tokens or more in all. No reference translation in the shipped or the development data
# (Gemma tokenizer) ends in such a run (tests/test_decoding.py checks the shipped files); "매우 매우 매우" is 3
# tokens, far below it. A looping answer of a small model repeats a clause until its token budget.
LOOP_MAX_PERIOD = 32
LOOP_MIN_REPEATS = 3
LOOP_MIN_TOKENS = 12


def loop_start(tokens: list[int]) -> int | None:
    """Where a trailing loop's second copy begins (keep tokens[:loop_start] = the text with one copy of the
    repeated unit), or None when the tokens do not end in a loop. The shortest repeating unit wins."""
    n = len(tokens)
    for period in range(1, min(LOOP_MAX_PERIOD, n // LOOP_MIN_REPEATS) + 1):
        j = n - period - 1
        while j >= 0 and tokens[j] == tokens[j + period]:
            j -= 1
        span = n - (j + 1)  # the tail that repeats with this period, its first copy included
        if span >= max(LOOP_MIN_REPEATS * period, LOOP_MIN_TOKENS):
            return j + 1 + period
    return None


def _strip_loop(tokens: list[int], trailing: set[int]) -> list[int]:
    """tokens with a trailing loop cut to one copy (end and pad tokens after the answer ignored)."""
    end = len(tokens)
    while end and tokens[end - 1] in trailing:
        end -= 1
    cut = loop_start(tokens[:end])
    return tokens if cut is None else tokens[:cut]


class AnswerEnds:
    """A per-row stopping criterion for model.generate: a row ends once its answer (the tokens after the
    prompt's `width`) has a line break after some text (first_line) or ends in a loop (loop_guard). Rows that
    end early no longer cost a forward pass each, which matters most for a base model that rambles on."""

    def __init__(self, tokenizer, width: int, first_line: bool, loop_guard: bool):
        self.tokenizer, self.width, self.first_line, self.loop_guard = tokenizer, width, first_line, loop_guard

    @classmethod
    def for_settings(cls, tokenizer, gen: GenerateSettings, width: int):
        return cls(tokenizer, width, gen.first_line, gen.loop_guard) if gen.first_line or gen.loop_guard else None

    def ended(self, tokens: list[int]) -> bool:
        if self.loop_guard and loop_start(tokens) is not None:
            return True
        return self.first_line and "\n" in self.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        rows = input_ids[:, self.width:].tolist()
        return torch.tensor([self.ended(row) for row in rows], dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def candidates(model, tokenizer, fmt: ChatFormat, prompts: list[str], n: int, max_new_tokens: int,
               batch_size: int = 8, progress: str | None = None, ends: tuple[str, ...] = (),
               states: torch.Tensor | None = None) -> list[list[tuple[str, float]]]:
    """The n most likely complete answers per prompt (beam search, width n) with their log-probabilities
    (sums over tokens, no length normalisation), best first. For short answers where the whole distribution
    matters, e.g. a price: a weighted median over them minimises the expected absolute error.

    ends: texts that also end an answer where one is a single token, kept in the answer (a price's number ends
    at its '.': the search then skips the certain '00' and end token, 3 of 7 steps on Gemma's digit tokens).

    Each prompt is read once: a batched prefill, then its cache is copied to the n beams (see `_beams`). The
    answers and scores are those of Hugging Face beam search with length_penalty=0, early_stopping=False and
    the end tokens as eos_token_id, which reads every prompt n times (its prefill runs on n copies).

    states: a float32 tensor (len(prompts), hidden size) that receives `prompt_states` of the prompts, taken from
    the prefill the search runs anyway (no second pass over the prompts)."""
    from tqdm.auto import tqdm

    if n < 2:
        raise ValueError("candidates() needs a beam width of at least 2; use generate() for greedy decoding")
    stops = stop_ids(tokenizer, fmt)
    extra = [ids[0] for ids in (tokenizer(text, add_special_tokens=False)["input_ids"] for text in ends)
             if len(ids) == 1]
    results: list[list[tuple[str, float]]] = [[] for _ in prompts]
    dev = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="ex")
    for idx, ids, mask, _ in _left_padded_batches(tokenizer, prompts, batch_size):
        with _first_state(model, states, idx):
            found = _beams(model, ids.to(dev), mask.to(dev), n, max_new_tokens, sorted({*stops, *extra}))
        for row, i in enumerate(idx):
            results[i] = [(tokenizer.decode(_without_stop(tokens, stops), skip_special_tokens=True).strip(), score)
                          for score, tokens in found[row]]
        bar.update(len(idx))
    bar.close()
    return results


@torch.inference_mode()
def prompt_states(model, tokenizer, prompts: list[str], batch_size: int = 16,
                  progress: str | None = None) -> torch.Tensor:
    """The last layer's hidden state (after the final norm) at each prompt's last token, float32, one row per
    prompt in input order: what the model holds about the prompt as it is about to write the answer's first
    token. Only the decoder runs (no output layer, no cache): for a head fitted on these features without
    generating, such as the price predictor's read-out."""
    from tqdm.auto import tqdm

    decoder = _decoder(model)
    dev = next(model.parameters()).device
    out: torch.Tensor | None = None
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="ex")
    for idx, ids, mask, _ in _left_padded_batches(tokenizer, prompts, batch_size):
        mask = mask.to(dev)
        hidden = decoder(input_ids=ids.to(dev), attention_mask=mask, use_cache=False,
                         position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state[:, -1]
        if out is None:
            out = torch.empty((len(prompts), hidden.shape[-1]), dtype=torch.float32)
        out[idx] = hidden.float().cpu()
        bar.update(len(idx))
    bar.close()
    return out if out is not None else torch.empty((0, 0))


def _decoder(model):
    """The transformer body under the output layer (for a PEFT model, with its adapter on)."""
    return vocab.unwrapped(model).get_decoder()


@contextlib.contextmanager
def _first_state(model, states: torch.Tensor | None, idx: list[int]):
    """Within: the decoder's first forward pass (a prefill over left-padded prompts) writes its last position's
    hidden state into states[idx]; nothing when states is None."""
    if states is None:
        yield
        return
    seen = []

    def keep(module, args, output):
        if not seen:
            seen.append(True)
            hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            states[idx] = hidden[:, -1].float().cpu()

    handle = _decoder(model).register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()


def _without_stop(tokens: list[int], stops: list[int]) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] in stops else tokens


def _next_logits(model, **inputs) -> tuple[torch.Tensor, object]:
    """(logits of the next token, one row per input row; the updated cache)."""
    out = model(**inputs, use_cache=True, logits_to_keep=1)  # the output layer on the last position only
    return out.logits[:, -1, :], out.past_key_values


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, object]:
    """_next_logits over left-padded prompts: positions count real tokens only."""
    return _next_logits(model, input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))


def _step_inputs(mask: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, step: int):
    """(attention mask, position ids) for the token chosen at `step` in batch rows `rows`: the prompt's mask plus
    one position per token generated so far, and the position after the prompt's real tokens."""
    attention = torch.cat([mask[rows], torch.ones((len(rows), step + 1), dtype=mask.dtype, device=mask.device)], -1)
    return attention, (lengths[rows] + step)[:, None]


def _log_probs(model, **inputs) -> tuple[torch.Tensor, object]:
    """(log-probabilities of the next token, float32, one row per input row; the updated cache)."""
    logits, cache = _next_logits(model, **inputs)
    return torch.log_softmax(logits.float(), dim=-1), cache


def _beams(model, ids: torch.Tensor, mask: torch.Tensor, width: int, max_new_tokens: int,
           stops: list[int], lines: tuple[torch.Tensor, ...] | None = None
           ) -> list[list[tuple[float, list[int]]]]:
    """Beam search over one left-padded batch; per prompt its `width` best finished answers (score, tokens).

    The prompts go through the model once (prefill); the cache is then copied to `width` rows per prompt and
    reordered after each step as beams move. The rule is Hugging Face's (GenerationMixin._beam_search): of the
    K = max(2, 1 + number of stop tokens) x width best continuations over all beams, those in the first `width`
    places that end in a stop token become finished answers, the best `width` of the rest run on. An answer
    cut off by max_new_tokens counts as finished. A prompt is done once `width` answers have finished and its
    best running beam scores no higher than the worst of them (log-probabilities only fall as tokens are added);
    its rows then leave the batch, so the rest of the batch runs on fewer rows.

    lines: `line_tables` of the tokenizer, to end an answer also at its first line break after some text (the
    break's token is kept in the answer, as greedy decoding with `AnswerEnds` keeps it)."""
    with vocab.compact_logits(model) as limited:
        return _search(model, ids, mask, width, max_new_tokens, stops, lines, limited)


def _search(model, ids: torch.Tensor, mask: torch.Tensor, width: int, max_new_tokens: int, stops: list[int],
            lines: tuple[torch.Tensor, ...] | None, limited: vocab.LimitedOutputLayer | None
            ) -> list[list[tuple[float, list[int]]]]:
    """_beams, with `limited` the output layer when it returns its own tokens' columns only (then column j is
    token limited.ids[j]: the search runs over those columns, the answers hold token ids)."""
    dev, n_prompts = ids.device, ids.shape[0]
    stop = torch.tensor(stops, device=dev)
    keep = max(2, 1 + len(stops)) * width
    lengths = mask.sum(-1)  # real prompt tokens per row: the next position after the prompt
    logits, cache = _prefill(model, ids, mask)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n_prompts)]
    alive = torch.arange(n_prompts, device=dev)  # prompts still searching, in row order
    history = torch.empty((n_prompts, 1, 0), dtype=torch.long, device=dev)  # running beams' answer tokens
    scores = torch.zeros((n_prompts, 1), device=dev)  # running beams' log-probabilities (one beam before step 0)
    texted = torch.zeros((n_prompts, 1), dtype=torch.bool, device=dev)  # running beams with visible text so far
    if lines is not None:
        size = log_probs.shape[-1] if limited is None else limited.weight.shape[0]
        breaks, leads, visible = (_padded(t, size).to(dev) for t in lines)
    for step in range(max_new_tokens):
        beams_now, columns = log_probs.shape[0] // len(alive), log_probs.shape[-1]
        total = (scores[:, :, None] + log_probs.view(len(alive), beams_now, columns)).view(len(alive), -1)
        top, flat = torch.topk(total, keep, dim=-1)
        beam, token = flat // columns, flat % columns
        if limited is not None:
            token = limited.ids[token]
        ends = torch.isin(token, stop) | (step == max_new_tokens - 1)
        texted = texted.gather(1, beam)  # the parent beam's, per continuation
        if lines is not None:
            ends |= breaks[token] & (texted | leads[token])
            texted = texted | visible[token]
        paths = torch.cat([history.gather(1, beam[:, :, None].expand(-1, -1, step)), token[:, :, None]], dim=-1)
        _collect(finished, alive.tolist(), top, paths, ends, width)
        if step == max_new_tokens - 1:
            break
        top = top - 1e9 * ends.float()  # an ended answer does not run on
        running = torch.topk(top, width, dim=-1).indices
        scores, history = top.gather(1, running), paths.gather(1, running[:, :, None].expand(-1, -1, step + 1))
        texted = texted.gather(1, running)
        rows = torch.arange(len(alive), device=dev)[:, None] * beams_now + beam.gather(1, running)
        going = torch.tensor([not _done(finished[p], best, width)
                              for p, best in zip(alive.tolist(), scores[:, 0].tolist())], device=dev)
        if not going.any():
            break
        _reorder_with_room(cache, rows[going].view(-1))  # each new beam gets its parent's cache; done prompts leave
        alive, scores, history, texted = alive[going], scores[going], history[going], texted[going]
        attention, positions = _step_inputs(mask, lengths, alive, step)
        log_probs, cache = _log_probs(model, input_ids=history[:, :, -1].reshape(-1, 1),
                                      attention_mask=attention.repeat_interleave(width, 0),
                                      position_ids=positions.repeat_interleave(width, 0), past_key_values=cache)
    return [sorted(found, key=lambda x: -x[0]) for found in finished]


def _reorder_with_room(cache, rows: torch.Tensor) -> None:
    """cache.reorder_cache(rows), with each layer's keys and values copied into buffers one position longer, so
    that the next step writes its token in place. transformers' dynamic cache layers concatenate the whole cache
    with the new position at every step instead: with the beams' reorder, every step copied the cache twice
    (`cat` was 7-10% of beam search's time, torch.profiler; the values are the same either way). A layer of another
    kind, a sliding-window layer about to slide, or a cache of another class is reordered as transformers does it."""
    dynamic_cache, plain, sliding = _dynamic_cache_classes()
    if type(cache) is not dynamic_cache:
        cache.reorder_cache(rows)
        return
    for layer in cache.layers:
        kind, length = type(layer), layer.get_seq_length()  # 0 for a layer not yet filled
        if length == 0 or kind not in (plain, sliding) or (
                kind is sliding and (layer.record_past or length + 1 > layer.sliding_window - 1)):
            layer.reorder_cache(rows)
            continue
        room = []
        for states in (layer.keys, layer.values):
            grown = states.new_empty((len(rows), *states.shape[1:-2], length + 1, states.shape[-1]))
            torch.index_select(states, 0, rows.to(states.device), out=grown[..., :length, :])
            room.append(grown)
        layer.keys, layer.values = room[0][..., :length, :], room[1][..., :length, :]  # the length masks read
        layer._ft_room = room
        layer.update = types.MethodType(_update_in_room, layer)


@functools.cache
def _dynamic_cache_classes() -> tuple:
    """transformers' DynamicCache and its two layer kinds (imported on first use, as transformers is elsewhere)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    return DynamicCache, DynamicLayer, DynamicSlidingWindowLayer


def _update_in_room(layer, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
    """A dynamic cache layer's update for one new position, written into the room `_reorder_with_room` left; any
    other update goes to the layer's own method."""
    room = layer.__dict__.pop("_ft_room")
    del layer.update  # the class's method again
    if key_states.shape[-2] != 1:
        return layer.update(key_states, value_states, *args, **kwargs)
    room[0][..., -1:, :].copy_(key_states)
    room[1][..., -1:, :].copy_(value_states)
    layer.keys, layer.values = room
    _, _, sliding = _dynamic_cache_classes()
    if type(layer) is sliding:
        layer.cumulative_length += 1
    return layer.keys, layer.values


def _padded(table: torch.Tensor, size: int) -> torch.Tensor:
    """A per-token table cut or padded with False to the output layer's size (it may differ from the tokenizer's)."""
    return table[:size] if len(table) >= size else torch.cat([table, table.new_zeros(size - len(table))])


def _collect(finished, alive, top, paths, ends, width: int) -> None:
    """Add the continuations in the first `width` places that end here to their prompt's finished answers,
    keeping the best `width`."""
    for row, col in ends[:, :width].nonzero().tolist():
        pool = finished[alive[row]]
        pool.append((top[row, col].item(), paths[row, col].tolist()))
        pool.sort(key=lambda x: -x[0])
        del pool[width:]


def _done(pool: list[tuple[float, list[int]]], best_running: float, width: int) -> bool:
    return len(pool) == width and best_running <= pool[-1][0]


def first_line(pieces: Iterable[str]) -> Iterator[str]:
    """The text up to its first line break, leading blank space skipped: what evaluation keeps of an answer
    (the references are one line, and a small model may ramble after it). Works on a stream of pieces.

    The rest of `pieces` is still consumed, not shown: leaving a stream() early would block its generating
    thread. Empty pieces are dropped."""
    started, done = False, False
    for piece in pieces:
        if done:
            continue
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        if "\n" in piece:
            piece, done = piece.split("\n")[0], True
        if piece:
            yield piece


def stream(model, tokenizer, fmt: ChatFormat, prompt: str, gen: GenerateSettings,
           max_new_tokens: int | None = None) -> Iterator[str]:
    """Yield text pieces as they are generated (for the CLI and the demos). Beam search cannot stream (the
    answer is chosen once every beam has ended): with gen.num_beams > 1 the whole answer is one piece."""
    from transformers import TextIteratorStreamer

    if beam_width(gen):
        yield generate(model, tokenizer, fmt, [prompt], gen, [max_new_tokens])[0]
        return

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(next(model.parameters()).device)
    kw = generation_kwargs(tokenizer, fmt, gen, max_new_tokens)
    ends = AnswerEnds.for_settings(tokenizer, gen, enc["input_ids"].shape[1])
    errors: list[BaseException] = []

    def work():
        try:
            with torch.inference_mode():
                model.generate(**enc, streamer=streamer, stopping_criteria=[ends] if ends else None, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]
