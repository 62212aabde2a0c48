"""Simple baselines scored like the LLMs: the training-mean constant and TF-IDF + ridge regression on log price.

    python -m apps.price_predictor.baselines --data data/price_predictor/train.jsonl     # test: shipped test split
    python -m apps.price_predictor.baselines --data items.jsonl --holdout-last 500      # test: the file's last 500
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from shared import runs
from shared.cli import Parser, run_cli
from shared.config import ConfigError
from shared.data import DataReport, overlap, read_raw
from shared.log import log

from .report import table
from .task import TASK, price_metrics

DEFAULT_TRAIN, DEFAULT_TEST = "data/price_predictor/train.jsonl", "data/price_predictor/test.jsonl"


def text_of(row) -> str:
    return f"{row['title']}\n{row['description']}"


def text_vectorizer(rows: int, vocabulary: list[str] | None = None):
    """The TF-IDF features of an item's text (word 1-2-grams), for a fit on `rows` training items, or over a saved
    vocabulary (then set its idf_ before use). The text ridge and the read-out's text block share it."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    # min_df 2 drops one-off words (noise) on real data; a handful of rows has few repeated words at all
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2 if rows >= 20 else 1, max_features=50_000,
                           sublinear_tf=True, vocabulary=vocabulary)


def fit_text_ridge(train_rows):
    """TF-IDF (word 1-2-grams) + ridge regression on log price, fitted on train_rows; returns rows -> prices."""
    from sklearn.linear_model import Ridge

    if len(train_rows) < 2:
        raise ConfigError(f"the text baseline needs at least 2 training items with a usable price; got "
                          f"{len(train_rows)}")
    vectorizer = text_vectorizer(len(train_rows))
    x_train = vectorizer.fit_transform([text_of(r) for r in train_rows])
    model = Ridge(alpha=1.0).fit(x_train, [math.log1p(r["price"]) for r in train_rows])

    def predict(rows) -> list[float]:
        return [math.expm1(v) for v in model.predict(vectorizer.transform([text_of(r) for r in rows]))]
    return predict


def run_baselines(train_rows, test_rows, ridge=None) -> dict[str, dict]:
    """Both baselines scored on test_rows; ridge: a fitted fit_text_ridge(train_rows), to reuse one."""
    ridge = ridge or fit_text_ridge(train_rows)  # refuses too few training rows, before anything divides by 0
    truth = [r["price"] for r in test_rows]
    mean = sum(r["price"] for r in train_rows) / len(train_rows)
    return {"constant (train mean)": price_metrics(truth, [mean] * len(truth)),
            "tf-idf + ridge": price_metrics(truth, ridge(test_rows))}


def main(argv=None):
    p = Parser(prog="python -m apps.price_predictor.baselines", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="training data (JSONL/CSV/Amazon; default: the shipped training split)")
    p.add_argument("--test", help=f"test data (default: {DEFAULT_TEST}, or the held-out tail)")
    p.add_argument("--holdout-last", type=int, default=0, help="train on all but the last N rows, test on them")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    def work():
        from shared.config import PROJECT_ROOT

        args.data = args.data or str(PROJECT_ROOT / DEFAULT_TRAIN)  # from any folder, as the default test is
        test = args.test or str(PROJECT_ROOT / DEFAULT_TEST)
        if args.test and args.holdout_last:
            raise ConfigError("--test and --holdout-last cannot be combined: --holdout-last tests on the last rows "
                              "of --data")
        if args.json:  # checked before the minutes of fitting, and never one of the inputs
            if Path(args.json).expanduser().is_dir():
                raise ConfigError(f"--json {args.json} is a folder; give a file name for the results")
            for given in (args.data, test):
                if Path(given).is_file() and runs.same_file(args.json, given):
                    raise ConfigError(f"--json {args.json} is the data file {given}; give the results another name")
            if not Path(args.json).resolve().parent.is_dir():
                raise ConfigError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
        if args.holdout_last:  # same rows as `train --limit TOTAL-N` and `evaluate --last N`
            n_rows = len(read_raw(args.data))
            if not 0 < args.holdout_last < n_rows:
                raise ConfigError(f"--holdout-last {args.holdout_last}: {args.data} has {n_rows} rows; hold out "
                                  f"between 1 and {n_rows - 1} of them")
            train_rows = TASK.read(args.data, DataReport(), limit=n_rows - args.holdout_last)
            test_rows = TASK.read(args.data, DataReport(), last=args.holdout_last, drop_duplicates=False)
        else:
            train_rows = TASK.read(args.data, DataReport())
            test_rows = TASK.read(test, DataReport(), drop_duplicates=False)
        if n := overlap(test_rows, train_rows):
            log(f"{n} of the {len(test_rows)} test rows are also training rows: the scores flatter the baselines")
        results = run_baselines(train_rows, test_rows)
        print(f"train rows: {len(train_rows)}, test rows: {len(test_rows)}")
        print(table(results))
        if args.json:
            runs.write_json(args.json, results)

    run_cli(work, own_process=argv is None)


if __name__ == "__main__":
    main()
