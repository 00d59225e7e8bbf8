"""Failure injection, changeable at run time through POST /sim/faults.

Durations here are real seconds (never time-scaled): they exist to trip the gateway's timeouts.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Faults:
    error_rate: float = 0.0  # probability that a request gets `error_status` at once
    fail_next: int = 0  # the next N requests get `error_status` (deterministic for tests)
    error_status: int = 500
    delay_s: float = 0.0  # slow start: every request waits this long before being queued
    drop_rate: float = 0.0  # probability that the connection is cut mid-response
    drop_next: int = 0  # the next N generation requests are cut mid-response
    drop_after_tokens: int = 2  # how many tokens are produced before the cut
    unhealthy: bool = False  # /health answers 503
    refuse_connections_s: float = 0.0  # stop listening for this long (write-only trigger)
    tokenize_fail: bool = False  # POST /tokenize answers `error_status`
    tokenize_delay_s: float = 0.0  # POST /tokenize waits this long first

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, rejecting unknown keys and wrong types with a clear error."""
        if not isinstance(changes, dict):
            raise ValueError("faults must be a JSON object")
        types = {f.name: f.type for f in fields(self)}
        for key, value in changes.items():
            if key not in types:
                raise ValueError(f"unknown fault {key!r}; known: {sorted(types)}")
            want = types[key]
            if want == "bool":
                ok = isinstance(value, bool)
            elif want == "int":
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise ValueError(f"fault {key!r} must be a non-negative {want}, got {value!r}")
            if key.endswith("_rate") and value > 1:
                raise ValueError(f"fault {key!r} is a probability in [0, 1], got {value}")
            if key == "error_status" and not 400 <= value <= 599:
                raise ValueError(f"error_status must be an HTTP error status, got {value}")
        for key, value in changes.items():
            setattr(self, key, value)

    def take_error(self) -> bool:
        """Whether this request fails now (consumes one `fail_next`)."""
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return self.error_rate > 0 and random.random() < self.error_rate

    def take_drop(self) -> bool:
        """Whether this request's connection is cut mid-response (consumes one `drop_next`)."""
        if self.drop_next > 0:
            self.drop_next -= 1
            return True
        return self.drop_rate > 0 and random.random() < self.drop_rate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
