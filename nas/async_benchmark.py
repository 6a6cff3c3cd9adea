"""``python -m nas.async_benchmark``: what asynchronous parallel search gains (see :mod:`nas.bench.asynchronous`)."""
from __future__ import annotations

from nas.bench.asynchronous import main

if __name__ == "__main__":
    main()
