"""The runtime's own console lines (the functions log through Powertools)."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} [local-runtime] {message}\n")
    sys.stderr.flush()
