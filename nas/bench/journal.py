"""``records.jsonl``: the finished (strategy, seed) results of a benchmark, kept as they come.

Every finished (strategy, seed) is appended at once, so a benchmark that is stopped (SIGTERM,
Ctrl-C, a crash) keeps them, and the same command started again runs only what is missing.
A result is read back only under the fingerprint of the settings it depends on, so changing
a strategy's settings or the budget reruns that strategy and nothing else.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from nas.store import config_fingerprint

Record = TypeVar("Record")

FILE = "records.jsonl"


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


def task_fingerprint(cfg: DictConfig, name: str, keys: Sequence[str], setups: Sequence[str] = ("strategies",), additions: Sequence[str] = ("pruning",)) -> str:
    """What a (strategy, seed) result depends on besides its seed: the config's ``keys``,
    the strategy's own settings (``cfg[group][name]`` for the first ``group`` of ``setups``
    that holds ``name``) and its entries in the ``additions`` groups that hold it (a pruning
    rule). Without such entries the fingerprint is what it was before additions existed, so
    earlier results still resume."""
    parts = {key: _plain(cfg[key]) for key in keys if key in cfg}
    setup = next((cfg[group][name] for group in setups if cfg.get(group) and name in cfg[group]), None)
    added = {group: _plain(cfg[group][name]) for group in additions if cfg.get(group) and cfg[group].get(name)}
    return config_fingerprint({**parts, "name": name, "setup": _plain(setup), **({"additions": added} if added else {})})


class Journal:
    """The ``records.jsonl`` of a benchmark's output folder.

    Args:
        folder: the benchmark's output folder.
        fingerprints: strategy name -> :func:`task_fingerprint` of its results.
    """

    def __init__(self, folder: Path, fingerprints: dict[str, str]) -> None:
        self.path = Path(folder) / FILE
        self.fingerprints = fingerprints

    def read(self, make: Callable[..., Record], seeds: Iterable[int]) -> tuple[dict[str, list[Record]], set[tuple[str, int]]]:
        """The stored results of this benchmark's strategies on ``seeds`` (each record built
        by ``make(**fields)``), and the set of their (strategy, seed) pairs."""
        wanted = set(seeds)
        results: dict[str, list[Record]] = {name: [] for name in self.fingerprints}
        done: set[tuple[str, int]] = set()
        if not self.path.is_file():
            return results, done
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short when the benchmark was killed mid-write
            name, seed = entry.get("name"), entry.get("record", {}).get("seed")
            if self.fingerprints.get(name) == entry.get("fingerprint") and seed in wanted and (name, seed) not in done:
                results[name].append(make(**entry["record"]))
                done.add((name, seed))
        return results, done

    def append(self, name: str, record: Any) -> None:
        """Add one finished (strategy, seed) result (a dataclass) to the file, flushed at once."""
        # A line cut short by a kill stays a line of its own (and is skipped when read).
        with self.path.open("ab+") as sink:
            sink.seek(0, 2)
            end = sink.tell()
            if end:  # read the last byte only: the file grows with every seed
                sink.seek(end - 1)
                cut = sink.read(1) != b"\n"
            else:
                cut = False
            line = ("\n" if cut else "") + json.dumps({"name": name, "fingerprint": self.fingerprints[name], "record": asdict(record)}) + "\n"
            sink.write(line.encode())
