"""Fine-tune the price predictor (loss only on the price after "Price is $"), then fit its hidden-state read-out.

    python -m apps.price_predictor.train                          # cpu/gpu profile picked automatically
    python -m apps.price_predictor.train --data amazon_meta.jsonl --max-steps 300
"""
from shared.cli import train_main

from . import readout
from .task import TASK

if __name__ == "__main__":
    train_main(TASK, after=readout.after_training)  # then the hidden-state read-out (readout.py) is fitted
