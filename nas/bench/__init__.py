"""Benchmarks of search strategies: every harness behind ``python -m nas.benchmark`` and
``python -m nas.async_benchmark``.

- :mod:`nas.bench.tabular`: one objective on a lookup table (NAS-Bench-201);
- :mod:`nas.bench.multifidelity` and its peers :mod:`nas.bench.mf_peers`: costs in
  equivalent full evaluations, cheap fidelities (NAS-Bench-201's 12-epoch runs, NAS-Bench-301);
- :mod:`nas.bench.multiobjective`: fronts and budgets;
- :mod:`nas.bench.asynchronous`: parallel workers on a virtual clock;
- :mod:`nas.bench.journal`: finished (strategy, seed) results kept as they come.

The top layer: it may import every other package of ``nas``; nothing but the commands
imports it.
"""
