"""Answer-only causal-LM loss with a fused output layer + cross-entropy, a slice of the vocabulary at a time.

Why: with a 262k-token vocabulary the output layer dominates a small model's step. The stock path builds
(batch x length x vocab) logits, a log-softmax over them, and a zero-filled gradient of the same size.
Here the output layer runs only on positions that carry loss, over a slice of the vocabulary at a time, and
the gradient with respect to the hidden states is computed in the same pass (softmax minus one-hot), so no
full logits tensor is ever built or kept for the backward pass. The result equals the plain loss (tests check
values and gradients).
"""
from __future__ import annotations

import torch

from . import lean
from .embeddings import compute_dtype
from .vocab import unwrapped

# Values of a slice of the output layer's rows and its logits together (slice x (width + rows)): 4M, 16 MB in
# float32 (4,854 of Gemma's 262k rows for the benchmark's 224 answer tokens). Against 64 rows of logits over the
# whole vocabulary at a time (64 x 262k, 100 MB with the float32 log-probabilities), measured on the benchmark
# (AVX512-BF16, bf16): peak 1,674-1,722 MB instead of 1,854-1,934, steps 0.76-0.87 s instead of 0.84-0.99 s.
SLICE_VALUES = 2**22


class _SlicedLinearCrossEntropy(torch.autograd.Function):
    """The same sum, one pass over the vocabulary a slice of rows at a time for every row at once, with the
    softmax's normaliser and the gradient accumulated online (rescaled whenever a slice raises a row's maximum,
    as flash attention does): neither the whole logits nor, for a weight kept narrower than it computes
    (shared/embeddings.py), a widened copy of it ever exist, and each slice is widened once."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap):
        wide = compute_dtype(weight)
        h = hidden.to(wide)
        n, width = h.shape
        step = max(256, min(weight.shape[0], SLICE_VALUES // (width + n)))
        top = h.new_full((n,), float("-inf"), dtype=torch.float32)
        norm, picked = torch.zeros_like(top), torch.zeros_like(top)
        slope = torch.ones_like(top)
        acc = torch.zeros((n, width), dtype=torch.float32, device=h.device)
        for start in range(0, weight.shape[0], step):
            w = weight[start:start + step].to(wide)
            logits = (h @ w.t()).float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            rows = ((targets >= start) & (targets < start + w.shape[0])).nonzero().squeeze(-1)
            cols = targets[rows] - start  # the targets that fall in this slice, as its columns
            picked[rows] = logits[rows, cols]
            if softcap:
                slope[rows] = 1.0 - capped[rows, cols].square()
            new_top = torch.maximum(top, logits.amax(-1))
            rescale = torch.exp(top - new_top)  # 0 on the first slice (top is -inf)
            probs = logits.sub_(new_top[:, None]).exp_()
            norm.mul_(rescale).add_(probs.sum(-1))
            if softcap:
                probs.mul_(1.0 - capped.square())
            # The target's own term, (p - 1) x its row, is added at the end in float32: summed here in bf16 and
            # then less its row, a confident token's small gradient would drown in the rounding of p x row.
            probs[rows, cols] = 0.0
            acc.mul_(rescale[:, None]).add_(probs.to(wide) @ w)
            top = new_top
        lse = top + norm.log()
        total = (lse - picked).sum()
        own = (torch.exp(picked - lse) - 1.0) * slope
        grad = acc.div_(norm[:, None]).add_(own[:, None] * weight[targets].float()).to(hidden.dtype)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             softcap: float | None = None) -> torch.Tensor:
    """sum_i CE(softcap(hidden_i @ weight.T), targets_i), without keeping the logits for backward.

    The output layer is frozen in LoRA training; when it is trainable, use the plain path instead.
    """
    if weight.requires_grad:
        logits = (hidden @ weight.t()).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    if targets.numel() == 0:  # no rows: nothing to slice through (a float32 run would widen every slice)
        return hidden.float().sum() * 0.0
    with torch.autocast(hidden.device.type, enabled=False):
        return _SlicedLinearCrossEntropy.apply(hidden, weight, targets, softcap or 0.0)


def _causal_lm(model):
    """The *ForCausalLM module under PEFT/DDP wrappers (LoRA layers stay active inside it)."""
    return unwrapped(model.module if hasattr(model, "module") else model)


# Fewer shared tokens than this and the second backbone call costs about what it saves.
MIN_SHARED_PREFIX = 8


def shared_prefix_length(inputs: dict) -> int:
    """Leading tokens that every row of the batch has in common (a system prompt, a chat header), stopped one
    token before the earliest answer token (whose prediction needs that position's own hidden state); 0 when
    sharing does not apply: one row, left padding, explicit position ids, or fewer than MIN_SHARED_PREFIX."""
    ids, labels = inputs["input_ids"], inputs["labels"]
    if ids.shape[0] < 2 or "position_ids" in inputs:
        return 0
    same = (ids == ids[:1]).all(0)
    if inputs.get("attention_mask") is not None:
        same &= inputs["attention_mask"].bool().all(0)
    common = int(same.long().cumprod(0).sum())
    answers = labels != -100
    if not answers.any(-1).all():
        return 0
    first_answer = int(answers.long().argmax(-1).min())
    length = min(common, first_answer - 1)
    return length if length >= MIN_SHARED_PREFIX else 0


def backbone_hidden(backbone, inputs: dict, share_prefix: bool) -> tuple[torch.Tensor, int]:
    """(last hidden states from position `start` on, start). With share_prefix, the rows' common prefix goes
    through the model once, as a one-row cache repeated for every row, and only the rest is computed per row:
    the same values (and gradients, summed over the rows through the repeat) at a fraction of the compute
    when, as in chat data, a system prompt and header open every example. Not under gradient checkpointing,
    where transformers drops the cache inside checkpointed layers."""
    kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
    start = shared_prefix_length(inputs) if share_prefix else 0
    if start == 0:
        return backbone(**kwargs, use_cache=False).last_hidden_state, 0
    ids = kwargs["input_ids"]
    cache = backbone(input_ids=ids[:1, :start], use_cache=True).past_key_values
    cache.batch_repeat_interleave(ids.shape[0])
    rest = backbone(input_ids=ids[:, start:], attention_mask=kwargs.get("attention_mask"), past_key_values=cache,
                    use_cache=True)
    return rest.last_hidden_state, start


# With an output vocabulary, every FULL_EVERY-th token of an answer and its last token are still scored over
# the whole vocabulary. Without them nothing pushes the tokens outside it down: measured on the default
# translator run, 204 of 240 test answers decoded over the full vocabulary (as an export decodes) ended in a
# stray token ("jiwarl") instead of end-of-turn.
FULL_EVERY = 8


def _answer_loss(hidden, weight, targets, cap, vocab, full) -> torch.Tensor:
    """Summed cross-entropy of the answer tokens; `full` marks those scored over the whole vocabulary."""
    if vocab is None:
        return linear_cross_entropy_sum(hidden, weight, targets, cap)
    rows = vocab.to(targets.device).row[targets]
    full = full | (rows < 0)  # a token outside the vocabulary (none in training data) is scored over everything
    return (linear_cross_entropy_sum(hidden[full], weight, targets[full], cap)
            + linear_cross_entropy_sum(hidden[~full], vocab.rows_of(weight), rows[~full], cap))


def completion_loss(model, inputs: dict, num_items_in_batch=None, share_prefix: bool = False,
                    vocab=None, saved_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens (labels != -100), computing logits only there.

    With gradient accumulation the Trainer passes num_items_in_batch (loss tokens over all micro-batches),
    so the sum is divided by that instead of this micro-batch's count. share_prefix: see backbone_hidden.
    vocab: a shared.vocab.OutputVocab; the softmax then runs over its tokens only (a batch with an answer token
    outside it, which training data cannot have, falls back to the full vocabulary).
    saved_dtype: keep the backbone's float32 activations for backward in this dtype (shared.lean.saved_in).
    """
    labels = inputs["labels"]
    lm = _causal_lm(model)
    backbone = getattr(lm, lm.base_model_prefix)
    share_prefix = share_prefix and not getattr(lm, "is_gradient_checkpointing", False)
    with torch.profiler.record_function("backbone forward"), lean.saved_in(saved_dtype, lm):  # profile labels
        hidden, start = backbone_hidden(backbone, inputs, share_prefix)
    targets = labels[:, start + 1:]  # hidden[:, i] (position start + i) predicts labels[:, start + i + 1]
    mask = targets != -100
    cap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
    head = lm.get_output_embeddings()
    with torch.profiler.record_function("output layer + loss"):
        if head.bias is not None:  # rare; the fused path assumes a bias-free output layer
            logits = head(hidden[:, :-1][mask]).float()
            total = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="sum")
        else:
            # Chosen by the token's place in its own answer, so the same tokens are picked however the batch is
            # split between processes or micro-batches.
            place = mask.long().cumsum(1) - 1
            last = mask & ~torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
            full = last | (place % FULL_EVERY == 0)
            total = _answer_loss(hidden[:, :-1][mask], head.weight, targets[mask], cap, vocab, full[mask])
    count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)
