"""What the command-line entry points share: user errors, paths, threads."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import torch

from nas.errors import NASError

@contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`NASError` into its one-sentence message on stderr and exit status 2."""
    try:
        yield
    except NASError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def configure_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (worker processes share the cores between them)."""
    if threads:
        torch.set_num_threads(int(threads))
