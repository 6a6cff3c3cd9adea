"""What the command-line entry points share: user errors, paths, threads."""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from nas.errors import NASError
from nas.lifecycle import sigterm_as_interrupt


def user_error_of(error: BaseException) -> NASError | None:
    """The :class:`NASError` behind ``error``, also when a library re-raised it wrapped
    (Hydra's ``instantiate`` turns a constructor's error into an ``InstantiationException``)."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, NASError):
        seen = seen.__cause__
    return seen


#: A ``constraints`` override (``constraints=``, ``+constraints=``, ``++constraints=``) and its value.
_CONSTRAINTS_OVERRIDE = re.compile(r"^(\+{0,2}constraints)=(.*)$")


def quote_comparisons(argv: list[str]) -> list[str]:
    """``argv`` with unquoted budget comparisons quoted for Hydra's override grammar, whose
    lexer stops at ``<`` and ``=`` in a value: ``constraints=[latency_ms<=5,params_m<=3]``
    becomes ``constraints=["latency_ms<=5","params_m<=3"]`` (a single comparison may go
    without brackets). Quoted values and dictionaries (``{flops_m: 16}``) pass unchanged."""
    out = []
    for arg in argv:
        match = _CONSTRAINTS_OVERRIDE.match(arg)
        value = match.group(2).strip() if match else ""
        if match and re.search(r"[<>]", value) and not re.search(r"[\"'{]", value):
            items = [item.strip() for item in value.removeprefix("[").removesuffix("]").split(",") if item.strip()]
            quoted = ",".join(f'"{item}"' for item in items)
            arg = f"{match.group(1)}=[{quoted}]"
        out.append(arg)
    return out


#: The exit status of a command stopped by SIGTERM or Ctrl-C (the shell's 128 + SIGINT).
INTERRUPTED = 130


@contextmanager
def user_errors(interrupted: str = "what had finished is kept; run the same command again to resume") -> Iterator[None]:
    """Turn :class:`NASError` into its one-sentence message on stderr and exit status 2;
    and SIGTERM or Ctrl-C into one line (``interrupted``: what was kept and what to do next) and status 130,
    after every ``with`` block on the way out has closed its workers."""
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}.", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None
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
