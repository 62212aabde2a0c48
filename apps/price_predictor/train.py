"""Fine-tune the price predictor (loss only on the price after "Price is $").

    python -m apps.price_predictor.train                          # cpu/gpu profile picked automatically
    python -m apps.price_predictor.train --data amazon_meta.jsonl --max-steps 300
"""
from shared.cli import train_main

from .task import TASK

if __name__ == "__main__":
    train_main(TASK)
