"""Fault injection, set at run time per operation through the control API.

A rule for one operation (``PutImage``, ``BatchGetImage``, ... or any other
JSON-protocol operation the emulator serves, such as ``PutEvents``) holds:

* ``sequence``: outcomes consumed one per call, in order. Each is ``"ok"``,
  an error name (``ThrottlingException``, ``ServerException``,
  ``InternalError`` or any ECR error code), or ``{"error": ..., "latency_ms": ...}``.
  When the sequence runs out the operation behaves normally again.
* ``rate`` and ``error``: after the sequence, fail this fraction of calls
  with ``error`` (random, reproducible with ``seed``).
* ``errors``: instead of ``rate``/``error``, several errors with their own
  fractions, e.g. ``{"ThrottlingException": 0.3, "ServerException": 0.1}``.
* ``latency_ms``: delay added to every call; ``latency_ms_max``: a further
  random delay, uniform from 0 to this.
* ``user_agent`` (optional): only calls whose User-Agent contains this text
  (e.g. ``aws-sdk-rust``: the service under test, not the pusher).
* ``repository`` (optional): only ECR calls on that repository, so tests
  running in parallel on one emulator do not take each other's faults.

Every injected fault is counted, so a test can assert its client retried.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

#: Errors the emulator knows how to send, with their HTTP status.
STATUS = {
    "ThrottlingException": 400,
    "ServerException": 500,
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "LimitExceededException": 400,
    "AccessDeniedException": 400,
}

MESSAGES = {
    "ThrottlingException": "Rate exceeded",
    "ServerException": "Injected server-side error",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service unavailable",
    "AccessDeniedException": "User is not authorized to perform this action (injected)",
}


class FaultError(ValueError):
    """A fault rule the control API cannot accept."""


@dataclass
class Outcome:
    """What one call gets: an error to send (or none) and a delay."""

    error: str | None = None
    latency_ms: int = 0


@dataclass
class Rule:
    """The faults configured for one operation."""

    sequence: list[Outcome] = field(default_factory=list)
    rate: float = 0.0
    error: str = "ThrottlingException"
    latency_ms: int = 0
    rng: random.Random = field(default_factory=random.Random)
    errors: dict[str, float] = field(default_factory=dict)
    latency_ms_max: int = 0
    user_agent: str | None = None


def _outcome(item: Any) -> Outcome:
    if item == "ok" or item is None:
        return Outcome()
    if isinstance(item, str):
        return Outcome(error=item)
    if isinstance(item, dict):
        error = item.get("error")
        if error is not None and not isinstance(error, str):
            raise FaultError(f"'error' must be a string, got {error!r}")
        latency = item.get("latency_ms", 0)
        if not isinstance(latency, int) or latency < 0:
            raise FaultError(f"'latency_ms' must be a non-negative integer, got {latency!r}")
        return Outcome(error=None if error == "ok" else error, latency_ms=latency)
    raise FaultError(f"a sequence item must be 'ok', an error name or an object, got {item!r}")


class Faults:
    """Fault rules per operation, and counts of what was injected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}
        self.injected: dict[str, dict[str, int]] = {}

    def set(self, operation: str, spec: dict[str, Any]) -> None:
        """Replaces the rule for ``operation``."""
        if not operation or not isinstance(operation, str):
            raise FaultError("'operation' is required")
        sequence = spec.get("sequence") or []
        if not isinstance(sequence, list):
            raise FaultError("'sequence' must be a list")
        rate = spec.get("rate", 0.0)
        if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise FaultError(f"'rate' must be between 0 and 1, got {rate!r}")
        error = spec.get("error", "ThrottlingException")
        if not isinstance(error, str):
            raise FaultError("'error' must be a string")
        latency = spec.get("latency_ms", 0)
        if not isinstance(latency, int) or latency < 0:
            raise FaultError(f"'latency_ms' must be a non-negative integer, got {latency!r}")
        repository = spec.get("repository")
        if repository is not None and (not isinstance(repository, str) or not repository):
            raise FaultError("'repository' must be a repository name")
        errors = spec.get("errors") or {}
        if not isinstance(errors, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v >= 0 for k, v in errors.items()
        ):
            raise FaultError("'errors' must map error names to fractions")
        if sum(errors.values()) > 1.0:
            raise FaultError("the fractions in 'errors' add up to more than 1")
        latency_max = spec.get("latency_ms_max", 0)
        if not isinstance(latency_max, int) or latency_max < 0:
            raise FaultError(f"'latency_ms_max' must be a non-negative integer, got {latency_max!r}")
        user_agent = spec.get("user_agent")
        if user_agent is not None and (not isinstance(user_agent, str) or not user_agent):
            raise FaultError("'user_agent' must be a non-empty string")
        rule = Rule([_outcome(i) for i in sequence], float(rate), error, latency)
        rule.errors = {k: float(v) for k, v in errors.items()}
        rule.latency_ms_max = latency_max
        rule.user_agent = user_agent
        if "seed" in spec:
            rule.rng.seed(spec["seed"])
        key = f"{operation}@{repository}" if repository else operation
        with self._lock:
            self._rules[key] = rule

    def clear(self) -> None:
        """Removes every rule and count."""
        with self._lock:
            self._rules.clear()
            self.injected.clear()

    def next(self, operation: str, user_agent: str = "") -> Outcome:
        """The outcome for this call of ``operation``."""
        with self._lock:
            rule = self._rules.get(operation)
            if rule is None or (rule.user_agent is not None and rule.user_agent not in user_agent):
                return Outcome()
            latency = rule.latency_ms + (rule.rng.randint(0, rule.latency_ms_max) if rule.latency_ms_max else 0)
            if rule.sequence:
                outcome = rule.sequence.pop(0)
                outcome = Outcome(outcome.error, outcome.latency_ms + latency)
            elif rule.errors:
                draw, error = rule.rng.random(), None
                for name, fraction in rule.errors.items():
                    if draw < fraction:
                        error = name
                        break
                    draw -= fraction
                outcome = Outcome(error, latency)
            elif rule.rate and rule.rng.random() < rule.rate:
                outcome = Outcome(rule.error, latency)
            else:
                outcome = Outcome(None, latency)
            if outcome.error:
                counts = self.injected.setdefault(operation, {})
                counts[outcome.error] = counts.get(outcome.error, 0) + 1
            return outcome

    def next_for(self, service: str, operation: str, repository: str | None = None, user_agent: str = "") -> Outcome:
        """The outcome for a call. The most specific rule wins: one for this
        repository over one for every repository, ``service:Operation`` over
        ``Operation``."""
        qualified = f"{service}:{operation}"
        keys = [qualified, operation]
        if repository:
            keys = [f"{qualified}@{repository}", f"{operation}@{repository}", *keys]
        with self._lock:
            key = next((k for k in keys if k in self._rules), operation)
        return self.next(key, user_agent)

    def snapshot(self) -> dict[str, Any]:
        """The rules still pending and the counts of injected faults."""
        with self._lock:
            return {
                "rules": {
                    op: {
                        "pending": [o.error or "ok" for o in r.sequence],
                        "rate": r.rate,
                        "error": r.error,
                        "latency_ms": r.latency_ms,
                        "latency_ms_max": r.latency_ms_max,
                        "errors": dict(r.errors),
                        "user_agent": r.user_agent,
                    }
                    for op, r in self._rules.items()
                },
                "injected": {op: dict(c) for op, c in self.injected.items()},
            }
