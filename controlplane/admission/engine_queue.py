"""The requests an engine holds beyond its batch, kept in the fair queue's order.

An engine may hold `per_engine` requests beyond its batch (the pool's capacity counts them), so
that a sequence that ends is replaced from vLLM's own queue at its next step instead of after a
crossing of the gateway. The order of that queue stays the control plane's:

- each grant's start tag goes to the engine as an integer `priority`, which an engine started
  with `--scheduling-policy priority` serves smallest first;
- a tenant that becomes backlogged starts at the smallest tag of the grants that may still wait
  inside the engines (`floor`), not at the newest: in the gateway's own queue it would have gone
  before them;
- nothing is admitted beyond the batch while a tenant waits on its own cap beside others
  (`Admission._held_back`): a place freed by its request would go to whatever waits in the
  engine, and its next request, admitted only then, would wait for the next one.
"""

from __future__ import annotations

from collections import deque

# Start tags are sequences per unit of weight (weights 0.001-1000): in millionths they keep that
# resolution as vLLM's integer priority, within its int64 range for billions of requests.
PRIORITY_SCALE = 1_000_000
PRIORITY_MAX = 2**63 - 1


class EngineQueue:
    def __init__(self, per_engine: int, engines: int) -> None:
        self.per_engine = per_engine  # 0: none, and no tags (the engines' own order)
        # The grants that may still wait inside an engine: at most its queue's worth per engine.
        self._recent: deque[float] = deque(maxlen=max(1, per_engine * max(1, engines)))

    def granted(self, tag: float) -> None:
        self._recent.append(tag)

    def floor(self, vclock: float) -> float:
        """Where a tenant that was idle starts: no credit banked, but not behind requests that
        were granted before it came and may still wait in an engine's queue."""
        return min(self._recent) if self.per_engine and self._recent else vclock

    def priority(self, tag: float) -> int | None:
        """vLLM's `priority` for a grant with this start tag (None without a queue)."""
        return min(round(tag * PRIORITY_SCALE), PRIORITY_MAX) if self.per_engine else None
