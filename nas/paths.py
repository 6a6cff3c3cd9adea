"""Paths given by users, including data files shipped inside the package."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Prefix of paths to data files shipped inside the ``nas`` package.
PACKAGE_PREFIX = "package://"


def resolve_path(path: str | Path) -> Path:
    """A filesystem path, where ``package://nb201/cifar10.csv`` names a file shipped in ``nas/data``."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        return Path(str(resources.files("nas") / "data" / text[len(PACKAGE_PREFIX) :]))
    return Path(text).expanduser()
