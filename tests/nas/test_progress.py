"""Progress bars: drawn on a terminal, absent when the output is not one; the search's time estimate."""
from __future__ import annotations

import fcntl
import logging
import math
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import torch

from nas.progress import estimate_epoch_seconds, format_duration, track_runs
from nas.spaces import build_space
from nas.train import DigitsDataModule

ROOT = Path(__file__).resolve().parents[2]
# Draws the bars of a search of 3 evaluations of 2 epochs, as nas.run does.
SCRIPT = """
from types import SimpleNamespace
from nas.progress import SearchProgress, track
for _ in track(range(4), 4, "zero-cost metrics", unit="net"):
    pass
progress = SearchProgress(budget=3, epochs=2)
for evaluation in range(3):
    for epoch in (1, 2):
        progress.on_epoch(SimpleNamespace(epoch=epoch, val_acc=0.9))
    progress.on_evaluation(1.0, 90.0 + evaluation)
progress.close()
print("done")
"""


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NAS_PROGRESS"}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _on_a_terminal(env: dict[str, str]) -> str:
    """Everything the script writes when stdout and stderr are a (pseudo-)terminal."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a width
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_bars_are_absent_when_output_is_not_a_terminal() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=_environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n" and done.stderr == ""


def test_bars_are_drawn_on_a_terminal_unless_turned_off() -> None:
    shown = _on_a_terminal(_environment())
    assert "zero-cost metrics" in shown and "4/4" in shown
    assert "search" in shown and "3/3 evaluations" in shown and "best=92" in shown and "candidate 3" in shown
    hidden = _on_a_terminal(_environment(NAS_PROGRESS="0"))
    assert hidden.strip() == "done"


def test_epoch_estimate_is_positive_and_leaves_the_random_state_alone() -> None:
    space = build_space("nb201", channels=4, cells_per_stage=1, resolution=8)
    data = DigitsDataModule(image_size=8, batch_size=64)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    seconds = estimate_epoch_seconds(space, data)
    assert torch.equal(torch.rand(3), expected)
    assert math.isfinite(seconds) and seconds > 0


def test_durations_read_as_a_person_would_say_them() -> None:
    assert [format_duration(s) for s in (4.25, 45.0, 600.0, 9000.0, None)] == ["4.2 s", "45 s", "10 min", "2.5 h", "unknown"]


def test_benchmark_runs_are_reported_as_they_finish(caplog) -> None:  # type: ignore[no-untyped-def]
    runs = [("bo", 1), ("random", 2), ("bo", 3)]
    with caplog.at_level(logging.INFO, logger="nas.progress"):
        passed = list(track_runs(iter(runs), len(runs)))
    assert passed == runs
    lines = [r.getMessage() for r in caplog.records if r.name == "nas.progress"]
    assert [line.split(" runs finished")[0] for line in lines] == ["benchmark: 1 / 3", "benchmark: 2 / 3", "benchmark: 3 / 3"]
    assert "(random)" in lines[1] and "left" in lines[0]
