"""Generation: load a run's adapter on its base, batched decoding, streaming, base vs fine-tuned on one copy.

Batching sorts prompts by length (less padding), pads on the left (so every row's last token is the
prompt's last token), and stops each sequence on the family's end-of-turn token.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

from . import models, runs
from .chat import ChatFormat
from .config import ConfigError, GenerateSettings, RunConfig, apply


def load_run(run: runs.Run, model_overrides: dict | None = None):
    """(model with the run's adapter, tokenizer, chat format, run config) for inference.

    model_overrides: model.* settings changed for this load only, e.g. {"quantization": "none"} to put the
    adapter on an unquantized copy of the base (shared/export.py)."""

    run_dir, record = run.path, run.record
    cfg: RunConfig = run.config()
    if model_overrides:
        apply(cfg, {f"model.{key}": value for key, value in model_overrides.items()})
    adapter = run.adapter_dir
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter} has no adapter_config.json")
    if not (adapter / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickled .bin
        raise ConfigError(f"{adapter} has no adapter_model.safetensors; adapter weights are loaded only from "
                          "safetensors (a .bin file is a pickle, and unpickling can run code)")
    model, tokenizer, fmt = models.load(cfg.model, training=False)
    if record.base_model:
        differs = models.same_base(record.base_model, models.fingerprint(model))
        if differs:
            raise ConfigError(f"the adapter in {run_dir} was trained on another base model than the one "
                              f"'{cfg.model.name}' now loads ({differs}). Put the original base back at that "
                              "path, or train a new run on this one.")
    try:
        model = models.attach_adapter(model, adapter)
    except (RuntimeError, ValueError, KeyError) as e:  # shape mismatch, missing target modules
        raise ConfigError(f"the adapter in {run_dir} does not fit the base model '{cfg.model.name}' "
                          f"({e.__class__.__name__}: {str(e).strip().splitlines()[-1][:200]})") from None
    model.eval()
    if models.resolve_backend(cfg.model) == "unsloth":  # Unsloth's fast generation path, once the adapter is on
        from .unsloth_backend import for_inference
        model = for_inference(model)
    return model, tokenizer, fmt, cfg


@contextlib.contextmanager
def base_model(model):
    """Run the base model from the same weights: the LoRA adapter is switched off inside the block."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
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
    """
    from tqdm.auto import tqdm

    kw = generation_kwargs(tokenizer, fmt, gen)
    outputs: list[str] = [""] * len(prompts)
    dev = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="ex")
    for idx, ids, mask, width in _left_padded_batches(tokenizer, prompts, gen.batch_size):
        if budgets is not None:
            kw["max_new_tokens"] = min(gen.max_new_tokens, max(budgets[i] or gen.max_new_tokens for i in idx))
        out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **kw)
        for row, i in enumerate(idx):
            outputs[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        bar.update(len(idx))
    bar.close()
    return outputs


@torch.inference_mode()
def candidates(model, tokenizer, fmt: ChatFormat, prompts: list[str], n: int, max_new_tokens: int,
               batch_size: int = 8, progress: str | None = None) -> list[list[tuple[str, float]]]:
    """The n most likely complete answers per prompt (beam search, width n) with their log-probabilities
    (sums over tokens, no length normalisation), best first. For short answers where the whole distribution
    matters, e.g. a price: a weighted median over them minimises the expected absolute error."""
    from tqdm.auto import tqdm

    if n < 2:
        raise ValueError("candidates() needs a beam width of at least 2; use generate() for greedy decoding")
    kw = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=n, num_return_sequences=n,
              length_penalty=0.0, early_stopping=True, eos_token_id=stop_ids(tokenizer, fmt),
              pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
              output_scores=True, return_dict_in_generate=True)
    results: list[list[tuple[str, float]]] = [[] for _ in prompts]
    dev = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, unit="ex")
    for idx, ids, mask, width in _left_padded_batches(tokenizer, prompts, batch_size):
        out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **kw)
        texts = tokenizer.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
        scores = out.sequences_scores.float().tolist()
        for row, i in enumerate(idx):
            pairs = zip(texts[row * n:(row + 1) * n], scores[row * n:(row + 1) * n])
            results[i] = sorted(((t.strip(), s) for t, s in pairs), key=lambda x: -x[1])
        bar.update(len(idx))
    bar.close()
    return results


def first_line(pieces: Iterator[str]) -> Iterator[str]:
    """The streamed text up to its first line break (leading breaks skipped), as evaluation keeps it.

    The rest of `pieces` is still consumed, not shown: leaving a stream() early would block its generating
    thread. Empty pieces are dropped."""
    shown, done = "", False
    for piece in pieces:
        if done:
            continue
        if not shown.strip():
            piece = piece.lstrip("\n")
        if "\n" in piece:
            piece, done = piece.split("\n")[0], True
        shown += piece
        if piece:
            yield piece


def stream(model, tokenizer, fmt: ChatFormat, prompt: str, gen: GenerateSettings,
           max_new_tokens: int | None = None) -> Iterator[str]:
    """Yield text pieces as they are generated (for the CLI and the demos)."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(next(model.parameters()).device)
    kw = generation_kwargs(tokenizer, fmt, gen, max_new_tokens)
    errors: list[BaseException] = []

    def work():
        try:
            with torch.inference_mode():
                model.generate(**enc, streamer=streamer, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]
