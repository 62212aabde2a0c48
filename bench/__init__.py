"""Benchmarks of the training core against the stock Hugging Face stack.

    python -m bench.train_throughput   # our training vs stock TRL SFTTrainer + PEFT, same rows and steps
    python -m bench.eval_throughput    # batched generation vs the one-example-at-a-time generate loop

Each prints a table, then one JSON object as its last line.
"""
