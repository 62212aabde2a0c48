"""Build data/translator/{train,valid,test}.jsonl from the hand-written pairs in data/translator/source/.

    python data/translator/make_splits.py

The pairs in source/*.jsonl were written for this project (not taken from any corpus), one file per
domain. The split is stratified by domain and seeded, so re-running it gives the same files. A pair that two
domains share is kept once, so no test pair is also a training pair.
"""
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SEED, TEST_SHARE, VALID_SHARE = 13, 0.17, 0.05


def main() -> None:
    splits = {"train": [], "valid": [], "test": []}
    for path in sorted((HERE / "source").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        random.Random(f"{SEED}-{path.stem}").shuffle(rows)
        n_test, n_valid = round(len(rows) * TEST_SHARE), round(len(rows) * VALID_SHARE)
        splits["test"] += rows[:n_test]
        splits["valid"] += rows[n_test:n_test + n_valid]
        splits["train"] += rows[n_test + n_valid:]
    seen = set()  # a pair written twice (in two domains) is kept once: in test first, then valid, then train
    for name in ("test", "valid", "train"):
        random.Random(f"{SEED}-{name}").shuffle(splits[name])
        kept = []
        for r in splits[name]:
            if (r["en"], r["ko"]) not in seen:
                seen.add((r["en"], r["ko"]))
                kept.append(r)
        splits[name] = kept
    for name, rows in splits.items():
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"en": r["en"], "ko": r["ko"], "domain": r["domain"]}, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
