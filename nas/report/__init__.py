"""What a search shows: its records and plots, its front, its progress on W&B, its status.

- :mod:`nas.report.records`: the records of a run's evaluations, what they say (best so
  far, median, the winner's gain over a reference) and the PNG reports; re-exported here;
- :mod:`nas.report.front`: the Pareto front of a run, as a table and a plot;
- :mod:`nas.report.loggers`: experiment tracking (W&B, or none);
- :mod:`nas.report.status`: a run directory read without disturbing it (``python -m nas.status``).

Layer: above the search and the store, whose results it reads; only the commands import it.
Progress bars are not here but in :mod:`nas.progress`: the zero-cost computation below shows them too.
"""
from nas.report.records import (
    ACCURACY_LATENCY_PNG,
    BEST_SO_FAR_PNG,
    LATENCY_METRIC,
    SPEARMAN_PNG,
    EvaluationRecord,
    SeedTrace,
    accuracy_latency_plot,
    best_record,
    best_so_far,
    best_so_far_plot,
    convergence_plot,
    cumulative_cost,
    median_value,
    pareto_front,
    search_gain_lines,
    spearman_plot,
    surrogate_rank_correlation,
    write_report,
)

__all__ = [
    "ACCURACY_LATENCY_PNG",
    "BEST_SO_FAR_PNG",
    "EvaluationRecord",
    "LATENCY_METRIC",
    "SPEARMAN_PNG",
    "SeedTrace",
    "accuracy_latency_plot",
    "best_record",
    "best_so_far",
    "best_so_far_plot",
    "convergence_plot",
    "cumulative_cost",
    "median_value",
    "pareto_front",
    "search_gain_lines",
    "spearman_plot",
    "surrogate_rank_correlation",
    "write_report",
]
