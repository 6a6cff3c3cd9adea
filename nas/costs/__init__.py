"""What a network costs, known before it is trained.

- :mod:`nas.costs.zero_cost`: zero-cost data of a sample of a space (costs of the fused
  network and the proxies of :mod:`nas.costs.proxies`), cached; what the surrogate pretrains on;
- :mod:`nas.costs.flops`: FLOPs and parameter counts, and the space-wide cost tables;
- :mod:`nas.costs.latency`: latency measured with a protocol that notices contention;
- :mod:`nas.costs.measured`: goal costs measured on a candidate before it is trained, cached;
- :mod:`nas.costs.columns`: cost and result tables (``arch,<columns>`` CSV) read as columns.

Layer: above the spaces (it builds their networks), below the strategies and objectives
that use the costs.
"""
