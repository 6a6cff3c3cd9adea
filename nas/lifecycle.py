"""How the commands' processes end: together, whatever ends them.

A command interrupted by SIGTERM (``timeout``, Slurm, CI) or Ctrl-C takes the same path:
the signal becomes :class:`KeyboardInterrupt` in the main process, so every ``with`` block
on the way out closes what it opened (worker pools, executors, a Ray instance, the store),
and the command says what was kept and how to resume. A worker process also asks Linux to
end it when its parent dies, so that even ``kill -9`` of a command leaves nothing running.

Only light imports here: :mod:`nas.worker` calls :func:`end_with_parent` before it imports
torch.
"""
from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import multiprocessing.pool
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

#: Linux's ``prctl`` option that sends a signal to a process when its parent thread dies.
_PR_SET_PDEATHSIG = 1


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def owned_temporary_directory(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory ``<prefix><host>-<pid>-…`` of this process, after removing the
    ones of the same prefix and host whose process is gone: a command killed with ``kill -9``
    cannot remove its own, and its next run (or any other command using the prefix) does.
    ``<host>`` is a short hash of the host name, so that a temporary folder shared between
    hosts never loses a live process' directory."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
    mine = f"{prefix}{host}-"
    for folder in Path(tempfile.gettempdir()).glob(f"{mine}*-*"):
        owner = folder.name[len(mine):].split("-", 1)[0]
        if owner.isdigit() and not pid_running(int(owner)):  # this process runs: its own are kept
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{mine}{os.getpid()}-")


def end_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when the process that started it dies.

    ``parent``: the pid the caller expects as its parent; when the parent already died
    before the request (the request only covers deaths after it), this process exits now.
    A no-op outside Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid() if parent is None else parent
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except (AttributeError, OSError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` in the main thread, as Ctrl-C does.

    Outside the main thread (where handlers cannot be set) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pool_worker_start(parent: int) -> None:
    # Ends the worker when the command dies, by any signal; Ctrl-C reaches the whole process
    # group, and the command (not each worker) decides what to do with it.
    end_with_parent(parent, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def worker_pool(workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """A ``spawn`` pool of ``workers`` processes that never outlive the block or the command.

    On a normal exit the pool finishes its work and is joined; on an exception (an
    interrupt included) its workers are terminated and joined before the exception goes on.
    """
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_pool_worker_start, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
