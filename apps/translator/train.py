"""Fine-tune the EN->KO translator.

    python -m apps.translator.train                      # cpu/gpu profile picked automatically
    python -m apps.translator.train --data my.tsv --max-steps 200 --lora.r 32
"""
from shared.cli import train_main

from .task import TASK

if __name__ == "__main__":
    train_main(TASK)
