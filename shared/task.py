"""What a product tells the core: its data fields, how a row becomes a training example, its configs.

A product subclasses `Task` in apps/<product>/task.py. Chat products implement `messages`; products that
train on raw text (no chat template) override `prompt_completion` and `inference_prompt` instead.
"""
from __future__ import annotations

from pathlib import Path

from .chat import ChatFormat, Message, render, split_for_training
from .config import ConfigError
from .data import (
    DataReport,
    Field,
    Row,
    check_limits,
    drop_duplicates_across,
    mix,
    read_rows,
    split_sources,
)


class Task:
    name: str = "task"  # runs go to runs/<name>/
    package: str = ""  # the product's Python package, whose modules are its commands (train, evaluate, ...)
    fields: list[Field] = []
    configs_dir: Path = Path(".")
    # True: refuse to train when tokens(prompt) is not an exact prefix of tokens(prompt + completion), i.e.
    # the tokenizer merges across the boundary and inference would see different tokens than training.
    require_stable_prefix: bool = False

    # Which field takes which turn of a chat-format row (OpenAI messages, ShareGPT, Alpaca), e.g.
    # {"user": "en", "assistant": "ko", "system": "system"}; None: the product reads columns only.
    chat_roles: dict | None = None

    # Fewest training rows (after the validation split) the product's training can use; checked before the
    # model loads.
    min_train_rows: int = 1

    def read(self, source: str, report: DataReport | None = None, limit: int = 0, last: int = 0,
             drop_duplicates: bool = True, weights: list[float] | tuple = (), seed: int = 0) -> list[Row]:
        """Read and validate one data file, or several separated by commas, mixed by `weights` (see data.mix;
        limit and last apply to each file; seed makes the sampling of fractional weights repeatable)."""
        check_limits(limit, last)
        sources = split_sources(source)
        if not sources:
            raise ConfigError("no data file given: pass --data FILE (or set data.train / data.test)")
        if weights and len(weights) != len(sources):
            raise ConfigError(f"data.weights has {len(weights)} value(s) but {source} names {len(sources)} file(s); "
                              "give one weight per file, in the same order")
        report = report if report is not None else DataReport()
        parts = [self.read_one(s, report, limit=limit, last=last, drop_duplicates=drop_duplicates) for s in sources]
        if len(parts) == 1 and not weights:
            return parts[0]
        if drop_duplicates and weights:  # a row two files hold stays in the one that weighs most
            order = sorted(range(len(parts)), key=lambda i: -weights[i])
            kept = drop_duplicates_across([parts[i] for i in order], report)
            parts = [kept[order.index(i)] for i in range(len(parts))]
        elif drop_duplicates:
            parts = drop_duplicates_across(parts, report)
        return mix(parts, list(weights), seed, report)

    def read_one(self, source: str, report: DataReport, limit: int = 0, last: int = 0,
                 drop_duplicates: bool = True) -> list[Row]:
        """Read and validate one data file; products with several input formats override this."""
        return read_rows(source, self.fields, report, limit=limit, last=last, drop_duplicates=drop_duplicates,
                         chat_roles=self.chat_roles)

    def messages(self, row: Row) -> list[Message]:
        """The conversation for a row, ending with the assistant's answer."""
        raise NotImplementedError

    def prompt_completion(self, row: Row, fmt: ChatFormat) -> tuple[str, str]:
        """Training pair: the loss is computed on the completion only."""
        return split_for_training(self.messages(row), fmt)

    def inference_prompt(self, row: Row, fmt: ChatFormat) -> str:
        """What the model sees at inference time; must equal the training prompt for the same row."""
        return render(self.messages(row)[:-1], fmt, add_generation_prompt=True)

    def answer_budget(self, row: Row, tokenizer) -> int | None:
        """Most new tokens a sensible answer needs (None = the config's max_new_tokens)."""
        return None

    # The product's own quality measure on generated answers, used during training (train.metric_samples):
    # its name (logged as eval_<name>) and whether higher is better. None: the task has none (loss only).
    metric_name: str | None = None
    greater_is_better: bool = True

    def metric(self, rows: list[Row], answers: list[str]) -> float:
        """The metric of raw generated answers against the rows' references."""
        raise NotImplementedError

    def data_checks(self, rows: list[Row]) -> dict:
        """Product-specific sanity figures for the data report (charset, ranges...)."""
        return {}

    def command(self, verb: str) -> str:
        """The command line that runs one of the product's entry points, e.g. command("train")."""
        return f"python -m {self.package}.{verb}"

    def commands(self) -> dict[str, str]:
        """The product's entry points as command lines; stored in each run so the core can name them."""
        return {verb: self.command(verb) for verb in ("train", "evaluate")}

    def config_path(self, profile: str) -> Path:
        return self.configs_dir / f"{profile}.yaml"
