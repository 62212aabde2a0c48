"""Evaluation throughput: batched generation (shared.generate.generate) vs the one-at-a-time generate loop.

    python -m bench.eval_throughput [--limit 32] [--batch-size 32] [--run RUN_FOLDER] [--dtype auto|float32]
                                    [--budgets]

Both sides decode the first --limit rows of the translator's test split (data/translator/test.jsonl) greedily,
with the same model object (the base model, or a run's fine-tuned adapter with --run), hence the same
weights and dtype, the same prompts, the same max_new_tokens and the same stop tokens (end-of-turn, EOS).

  ours  shared.generate.generate: prompts sorted by length, left-padded batches of --batch-size, every
        sequence stops on its own end-of-turn (and, with the config's generate.first_line, at its first line
        break: only the first line is compared, so that changes no output), the batch stops when all have.
        The loop guard is off on this side, as the loop has none.
  loop  what the usual notebooks do: for each example, tokenize the one prompt (no added special tokens: the
        rendered prompt already starts with BOS), model.generate(greedy), decode the new tokens.

By default both use the config's max_new_tokens (96 for the translator) for every example. --budgets adds the
translator's per-prompt answer budget on both sides (the loop caps each example at its own budget, a batch at
the largest budget in it), as `apps.translator.evaluate` does; a batch can then run an example past its own
budget, so outputs may differ in length where the model never stops.

Outputs are compared as strings after the translator's own cleaning (first non-empty line). Where some
differ, the count is printed with the first few: in bf16, a batch of left-padded prompts goes through
matmuls of other shapes than a single prompt, rounding differs slightly and greedy decoding can flip at a
near-tie, after which the continuations diverge; --dtype float32 shows whether that is the only cause.
Examples/s = examples / wall time of the side (tokenization, generation and decoding; model load excluded),
after one short warm-up generation for each side.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "translator" / "test.jsonl"
# The loop side decodes one example at a time: ~0.1-0.5 s per new token at batch 1 on this 2-core CPU (bf16;
# measured on a busy machine), and the base model rarely stops before max_new_tokens (96). 32 examples keep
# the default run (base model) under ~8 minutes; a fine-tuned run stops early, so --limit 48 fits there.
DEFAULT_LIMIT = 32
SHOW_DIFFS = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="first N rows of the test split")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per batch on our side")
    p.add_argument("--run", help="run folder: use its fine-tuned adapter (default: the base model)")
    p.add_argument("--data", default=str(TEST_SPLIT), help="translation pairs (en/ko)")
    p.add_argument("--model", default="gemma3-270m", help="base model without --run (registry name or folder)")
    p.add_argument("--chat-template", default="", help="chat family to force (for unregistered local models)")
    p.add_argument("--dtype", default="auto", help="weight dtype for both sides (auto = bf16 where the CPU is fast)")
    p.add_argument("--max-new-tokens", type=int, default=0, help="cap on new tokens (0 = the config's)")
    p.add_argument("--budgets", action="store_true", help="per-prompt answer budgets on both sides (as evaluate)")
    return p.parse_args(argv)


def load_model(a: argparse.Namespace):
    """(model, tokenizer, chat format, run config): a run's adapter on its base, or the base model alone."""
    from apps.translator.task import TASK
    from shared import models, runs
    from shared.config import resolve

    if a.run:  # the run's adapter on its base, in the benchmark's dtype
        from shared.generate import load_run

        model, tokenizer, fmt, cfg = load_run(runs.find_run(a.run, TASK.name), {"dtype": a.dtype})
    else:
        cli = {"model.name": a.model, "model.dtype": a.dtype}
        if a.chat_template:
            cli["model.chat_template"] = a.chat_template
        cfg = resolve(yaml_path=TASK.config_path("cpu"), cli=cli)
        model, tokenizer, fmt = models.load(cfg.model, training=False)
    return model.eval(), tokenizer, fmt, cfg


def one_at_a_time(model, tokenizer, fmt, prompts: list[str], gen, budgets=None) -> list[str]:
    """The notebook loop: one prompt, one model.generate, one decode; no batching, no sorting."""
    import torch

    from shared.generate import generation_kwargs

    kw = generation_kwargs(tokenizer, fmt, gen)  # greedy, same stop tokens and pad id as the batched side
    outputs = []
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            if budgets is not None:
                kw["max_new_tokens"] = min(gen.max_new_tokens, budgets[i] or gen.max_new_tokens)
            out = model.generate(**enc, **kw)
            outputs.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outputs


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    from apps.translator.task import TASK, clean_translation
    from shared.data import DataReport
    from shared.generate import generate

    model, tokenizer, fmt, cfg = load_model(a)
    # The loop has no loop guard, so ours runs without one too: the guard changes what a looping answer says.
    # Both decode greedily (the cpu profile's evaluation uses beam search; this compares the batching).
    gen = dataclasses.replace(cfg.generate, batch_size=a.batch_size, do_sample=False, loop_guard=False, num_beams=1,
                              max_new_tokens=a.max_new_tokens or cfg.generate.max_new_tokens)
    rows = TASK.read(a.data, DataReport(), limit=a.limit, drop_duplicates=False)
    prompts = [TASK.inference_prompt(r, fmt) for r in rows]
    budgets = [TASK.answer_budget(r, tokenizer) for r in rows] if a.budgets else None
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    print(f"[bench] {len(prompts)} prompts of {a.data}; {'run ' + str(a.run) if a.run else 'base model'}, "
          f"{dtype}, max_new_tokens {gen.max_new_tokens}, budgets {'on' if a.budgets else 'off'}",
          file=sys.stderr, flush=True)

    warm = dataclasses.replace(gen, max_new_tokens=2)
    generate(model, tokenizer, fmt, prompts[:2], warm)
    one_at_a_time(model, tokenizer, fmt, prompts[:1], warm)

    t0 = time.perf_counter()
    ours_raw = generate(model, tokenizer, fmt, prompts, gen, budgets)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop_raw = one_at_a_time(model, tokenizer, fmt, prompts, gen, budgets)
    loop_s = time.perf_counter() - t0

    ours = [clean_translation(x) for x in ours_raw]
    loop = [clean_translation(x) for x in loop_raw]
    differ = [i for i, (x, y) in enumerate(zip(ours, loop)) if x != y]
    n = len(prompts)
    ours_eps, loop_eps = n / ours_s, n / loop_s
    print(f"\nEvaluation throughput: {n} examples, greedy, {dtype}, batch {gen.batch_size} vs 1")
    print(f"{'':<28} {'ours (batched)':>15} {'loop (1 at a time)':>19}")
    print(f"{'wall time s':<28} {ours_s:>15.1f} {loop_s:>19.1f}")
    print(f"{'examples/s':<28} {ours_eps:>15.3f} {loop_eps:>19.3f}")
    print(f"speedup: {ours_eps / loop_eps:.2f}x; identical outputs after cleaning: {n - len(differ)}/{n}"
          f" (raw, before cleaning: {sum(x == y for x, y in zip(ours_raw, loop_raw))}/{n})")
    for i in differ[:SHOW_DIFFS]:
        print(f"  differs, row {rows[i].line}: ours {ours[i][:70]!r}\n{'':<{20 + len(str(rows[i].line))}}loop "
              f"{loop[i][:70]!r}")
    if differ:
        print(f"  why: {'bf16' if dtype == 'bfloat16' else dtype} arithmetic in batches of other shapes (left "
              "padding) rounds differently from a single prompt; greedy decoding flips at a near-tie and the "
              "continuation diverges" + ("; with --budgets a batch may also run past a row's own budget"
                                         if a.budgets else "") + ". Compare with --dtype float32.")
    summary = {"ours_examples_per_s": round(ours_eps, 3), "loop_examples_per_s": round(loop_eps, 3),
               "speedup": round(ours_eps / loop_eps, 2), "outputs_identical": not differ,
               "n": n, "n_differ": len(differ), "ours_s": round(ours_s, 1), "loop_s": round(loop_s, 1),
               "dtype": dtype, "batch_size": gen.batch_size, "max_new_tokens": gen.max_new_tokens,
               "budgets": a.budgets, "model": str(a.run) if a.run else a.model}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
