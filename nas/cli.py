"""What the command-line entry points share: user errors, paths, threads."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import torch

from nas.errors import NASError

def user_error_of(error: BaseException) -> NASError | None:
    """The :class:`NASError` behind ``error``, also when a library re-raised it wrapped
    (Hydra's ``instantiate`` turns a constructor's error into an ``InstantiationException``)."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, NASError):
        seen = seen.__cause__
    return seen


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`NASError` into its one-sentence message on stderr and exit status 2."""
    try:
        yield
    except Exception as exc:
        cause = user_error_of(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with ``count`` intra-op threads (unchanged when ``None``)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def configure_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (worker processes share the cores between them)."""
    if threads:
        torch.set_num_threads(int(threads))
