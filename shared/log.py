"""One-line progress and status messages on stderr, prefixed so they stand out from the libraries' output."""
from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(f"[ft] {msg}", file=sys.stderr, flush=True)
