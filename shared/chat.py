"""Chat templates for the model families we support, rendered in Python so training and inference agree.

One function, `render`, turns messages into text:
- for training (`add_generation_prompt=False`): the whole conversation, ending exactly with the family's
  end-of-turn token after the last assistant answer (so the model learns to stop);
- for inference (`add_generation_prompt=True`): up to and including the assistant header.

`split_for_training` gives the (prompt, completion) pair whose concatenation equals the training render;
the loss is computed on the completion only (the answer plus the end-of-turn token).

Products that train a base model on plain text (no chat template) end the completion with `end_of_text`
instead: the base model's own end-of-text token, the one token it saw end every document in pretraining.
"""
from __future__ import annotations

from dataclasses import dataclass

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class ChatFormat:
    family: str
    bos: str  # written at the start of the text; we tokenize with add_special_tokens=False
    end_of_turn: str  # generation stops on this token; training completions end with it
    system_role: bool  # False: the system text is folded into the first user turn (Gemma)
    # A plain-text completion (no chat template) ends with this; generation stops on it too. The base model's own
    # EOS: Llama 3.1 *base* never trained <|eot_id|> (its embedding row is untrained), so a completion ending with
    # it is barely learnt and generation runs on; <|end_of_text|> ended every pretraining document.
    end_of_text: str

    def header(self, role: str) -> str:
        return _HEADERS[self.family](role)

    def turn(self, role: str, content: str) -> str:
        return self.header(role) + content + self.end_of_turn + _AFTER_TURN[self.family]


_HEADERS = {
    "phi3": lambda role: f"<|{role}|>\n",
    "llama3": lambda role: f"<|start_header_id|>{role}<|end_header_id|>\n\n",
    "gemma": lambda role: f"<start_of_turn>{'model' if role == 'assistant' else role}\n",
    "chatml": lambda role: f"<|im_start|>{role}\n",
}
_AFTER_TURN = {"phi3": "\n", "llama3": "", "gemma": "\n", "chatml": "\n"}

FORMATS = {
    "phi3": ChatFormat("phi3", bos="<s>", end_of_turn="<|end|>", system_role=True, end_of_text="<|endoftext|>"),
    "llama3": ChatFormat("llama3", bos="<|begin_of_text|>", end_of_turn="<|eot_id|>", system_role=True,
                         end_of_text="<|end_of_text|>"),
    # Gemma 3 270M (the cpu profile) keeps <end_of_turn>: its plain-text runs and their measured results were
    # trained with it, and a switch to <eos> has not been measured.
    "gemma": ChatFormat("gemma", bos="<bos>", end_of_turn="<end_of_turn>", system_role=False,
                        end_of_text="<end_of_turn>"),
    "chatml": ChatFormat("chatml", bos="", end_of_turn="<|im_end|>", system_role=True, end_of_text="<|endoftext|>"),
}

# Special tokens that identify a family from a tokenizer's vocabulary, checked in this order.
_FAMILY_MARKERS = [("<|eot_id|>", "llama3"), ("<end_of_turn>", "gemma"), ("<|im_end|>", "chatml"), ("<|end|>", "phi3")]


def get_format(family: str) -> ChatFormat:
    if family not in FORMATS:
        raise ValueError(f"unknown chat template '{family}'; choose one of {', '.join(FORMATS)}")
    return FORMATS[family]


def detect_family(tokenizer) -> str | None:
    """Guess the chat family from the tokenizer's special tokens (for models not in the registry)."""
    vocab = tokenizer.get_vocab()
    for marker, family in _FAMILY_MARKERS:
        if marker in vocab:
            return family
    return None


def _normalise(messages: list[Message], fmt: ChatFormat) -> list[Message]:
    """Check roles and fold the system prompt into the first user turn for families without a system role."""
    for i, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: unknown role {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be a string")
    if fmt.system_role or not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0]["role"] == "user":
        rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def render(messages: list[Message], fmt: ChatFormat, add_generation_prompt: bool) -> str:
    msgs = _normalise(messages, fmt)
    text = fmt.bos + "".join(fmt.turn(m["role"], m["content"]) for m in msgs)
    if add_generation_prompt:
        if msgs and msgs[-1]["role"] == "assistant":
            raise ValueError("cannot add a generation prompt after an assistant turn")
        return text + fmt.header("assistant")
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError("a training render must end with an assistant turn")
    # Training text ends exactly at the end-of-turn token: what follows it is never learned.
    return text[: len(text) - len(_AFTER_TURN[fmt.family])]


def split_for_training(messages: list[Message], fmt: ChatFormat) -> tuple[str, str]:
    """(prompt, completion) with prompt + completion == render(messages, training); loss goes on completion."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's answer")
    prompt = render(messages[:-1], fmt, add_generation_prompt=True)
    completion = messages[-1]["content"] + fmt.end_of_turn
    return prompt, completion
