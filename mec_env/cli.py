"""Command-line conventions shared by the project's CLIs: bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["OneLineArgumentParser", "fail"]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` (one line) to stderr and exit with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see --help)")
