"""What travels between the search and the processes that evaluate for it: payloads,
signed objective files, and the evaluation of one trial that never raises for a broken candidate.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import pickle
import secrets
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nas.errors import NASError
from nas.objectives.base import Evaluation, Objective
from nas.strategies.base import Trial
from nas.trial import EpochGate, evaluate_trial


Payload = dict[str, Any]
#: One finished evaluation: its position in the submitted trials, the result, and the
#: seconds the evaluation itself took (measured where it ran).
Finished = tuple[int, Evaluation, float]


def evaluate_safely(objective: Objective, trial: Trial) -> Evaluation:
    """Evaluate one trial; an unexpected exception becomes a failed evaluation with its reason.

    Configuration errors (:class:`NASError`) still stop the search: they would fail every
    candidate alike.
    """
    try:
        evaluation = evaluate_trial(objective, trial)
    except NASError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken candidate must not end the search
        return Evaluation(value=math.nan, cost=planned_cost(objective, trial), status="failed", error=f"{type(exc).__name__}: {exc}")
    if evaluation.status != "failed" and not math.isfinite(evaluation.value):
        return Evaluation(value=math.nan, cost=evaluation.cost, status="failed", metrics=evaluation.metrics, error="non-finite objective value")
    return evaluation


def trial_to_json(trial: Trial) -> dict[str, Any]:
    """What a worker process needs of ``trial``: its encoding, fidelity and stop rule.

    Only an :class:`~nas.trial.EpochGate` travels (it is plain data); another stop rule is
    a callback into this process, and is refused.
    """
    spec: dict[str, Any] = {"encoding": list(trial.encoding), "fidelity": trial.fidelity}
    if isinstance(trial.stop_rule, EpochGate):
        spec["stop_rule"] = trial.stop_rule.to_dict()
    elif trial.stop_rule is not None:
        raise NASError(f"This pruning ({type(trial.stop_rule).__name__}) works only in the search's own process; use executor=local with a trainer that trains in one process.")
    return spec


def trial_from_json(spec: dict[str, Any]) -> Trial:
    """The trial :func:`trial_to_json` wrote."""
    gate = EpochGate.from_dict(spec["stop_rule"]) if spec.get("stop_rule") else None
    return Trial(tuple(spec["encoding"]), spec["fidelity"], gate)


def planned_cost(objective: Objective, trial: Trial) -> float:
    """What ``trial`` was to cost: an evaluation that fails is charged the fidelity it ran at
    (a full evaluation for objectives that do not say)."""
    cost_of = getattr(objective, "planned_cost", None)
    return float(cost_of(trial.fidelity)) if cost_of is not None else 1.0


def needs_own_process(objective: Objective) -> bool:
    """Whether ``objective`` must not evaluate inside the search's process (see the module doc)."""
    return bool(getattr(objective, "needs_own_process", False))


#: Payload key set when the worker, task or node died before it returned a result: the
#: evaluation itself said nothing, so it may run again (``executor.retries``).
LOST = "lost"


def failed_payload(reason: str, seconds: float = 0.0, lost: bool = False) -> Payload:
    payload: Payload = {"evaluation": asdict(Evaluation(value=math.nan, status="failed", error=reason)), "seconds": seconds}
    if lost:
        payload[LOST] = True
    return payload


def evaluate_here(objective: Objective, trial: Trial) -> Payload:
    """Evaluate in this process and return the payload."""
    started = time.perf_counter()
    try:
        evaluation = evaluate_safely(objective, trial)
    except NASError as error:
        return {"configuration_error": str(error)}
    return {"evaluation": asdict(evaluation), "seconds": time.perf_counter() - started}



def result_of(payload: Payload) -> tuple[Evaluation, float]:
    """The evaluation and its seconds; a configuration error is raised again here."""
    if "configuration_error" in payload:
        raise NASError(payload["configuration_error"])
    return Evaluation(**payload["evaluation"]), float(payload["seconds"])



#: The environment variable that hands a worker the key of its objective file.
OBJECTIVE_KEY_ENV = "NAS_OBJECTIVE_KEY"
_DIGEST_BYTES = 32  # SHA-256


def dump_objective(objective: Objective, path: Path) -> str:
    """Write ``objective`` for the workers of this search, signed; return the key (hex).

    This file is a message from the search to the workers it starts, not a saved artifact:
    it lives in a private temporary folder for one batch. Only pickle carries an arbitrary
    objective (cloudpickle, so a user's closures and lambda-built spaces travel too), so the
    file is signed with a fresh key that only the search and its workers hold (in their
    environment): :func:`load_objective` unpickles nothing that the search did not write.
    """
    import cloudpickle

    try:
        data = cloudpickle.dumps(objective)
    except Exception as error:  # noqa: BLE001 - whatever the pickler rejects, say what it was
        raise NASError(f"The objective cannot be sent to a worker process ({type(error).__name__}: {error}); use executor=local.") from None
    key = secrets.token_bytes(_DIGEST_BYTES)
    path.write_bytes(hmac.new(key, data, hashlib.sha256).digest() + data)
    return key.hex()


def load_objective(path: Path, key: str) -> Objective:
    """The objective :func:`dump_objective` wrote with ``key``; refuses any other file."""
    blob = path.read_bytes()
    digest, data = blob[:_DIGEST_BYTES], blob[_DIGEST_BYTES:]
    try:
        expected = hmac.new(bytes.fromhex(key), data, hashlib.sha256).digest()
    except ValueError:
        expected = b""
    if not hmac.compare_digest(digest, expected):
        raise NASError(f"{path} was not written by the search that started this worker (its signature does not match); it is not loaded.")
    return pickle.loads(data)



def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]

