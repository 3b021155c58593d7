"""Failed-authentication limiter per client address: a fixed budget per sliding window.

Bounded memory: at most ``max_clients`` addresses are tracked; the stalest is forgotten
first, so a flood of spoofed sources cannot grow the table without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class AuthFailureLimiter:
    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60.0,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float] | None:
        q = self._fails.get(client)
        if q is None:
            return None
        cutoff = self._clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._fails[client]
            return None
        return q

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it is not blocked."""
        q = self._recent(client)
        if q is None or len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window - self._clock())

    def failed(self, client: str) -> None:
        q = self._recent(client)
        if q is None:
            q = deque(maxlen=self.max_failures)
            self._fails[client] = q
            while len(self._fails) > self.max_clients:
                self._fails.popitem(last=False)
        self._fails.move_to_end(client)
        q.append(self._clock())

    def succeeded(self, client: str) -> None:
        self._fails.pop(client, None)
