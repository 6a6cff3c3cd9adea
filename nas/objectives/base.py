"""What an objective returns for one evaluation (defined in :mod:`nas.trial`, with the trial)."""
from __future__ import annotations

from nas.trial import Evaluation, Objective

__all__ = ["Evaluation", "Objective"]
