"""Neural architecture search for efficient vision models.

Bayesian optimisation with a deep-ensemble surrogate pretrained on zero-cost metrics,
multi-fidelity search, and the search spaces of efficient ConvNet / ViT hybrids.
The layout follows the data flow; ARCHITECTURE.md maps it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

from nas.errors import NASError

__all__ = ["NASError"]

#: Modules that moved, old name -> new name: importing the old name still works, with a
#: DeprecationWarning, and gives the new module's names.
MOVED_MODULES = {
    "nas.benchmark_mf": "nas.bench.multifidelity",
    "nas.mf_peers": "nas.bench.mf_peers",
    "nas.zero_cost": "nas.costs.zero_cost",
    "nas.proxies": "nas.costs.proxies",
    "nas.columns": "nas.costs.columns",
    "nas.objectives.measured_costs": "nas.costs.measured",
    "nas.mo_acquisition": "nas.acquisition.multiobjective",
    "nas.pareto": "nas.acquisition.pareto",
    "nas.goals": "nas.acquisition.goals",
    "nas.front": "nas.report.front",
    "nas.loggers": "nas.report.loggers",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module under its old name: a module holding the new one's names."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED_MODULES[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there.", DeprecationWarning, stacklevel=2)
        module.__dict__.update({k: v for k, v in vars(importlib.import_module(new)).items() if not k.startswith("__")})


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
