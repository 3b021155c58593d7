"""Failed-authentication limiter: a fixed budget per sliding window for each token presented
from each client address.

Keyed on the pair (address, token), not the address alone: every local client comes from
127.0.0.1, and an address-wide budget let any local process lock every valid token out for
the window with ten bad guesses (issue 19). What it stops is one client hammering with one
bad token (a broken script, a revoked token left in a config): that pair gets 429 until the
window passes. It does not slow a guesser trying new tokens, and need not: a token carries
256 random bits. The address's failures are still counted, to keep the log bounded (the first
``max_failures`` per window are logged, then one line says the rest are not).

Bounded memory: at most ``max_clients`` keys are tracked; the stalest is forgotten first, so
a flood of spoofed sources or random tokens cannot grow the table without limit. Tokens are
kept only as a short SHA-256 prefix, never as text.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable


def token_key(client: str, token: str) -> str:
    """The limiter key of ``token`` presented from ``client`` (a hash: never the token)."""
    return f"{client}#{hashlib.sha256(token.encode('utf-8', 'replace')).hexdigest()[:24]}"


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

    def _recent(self, key: str) -> deque[float] | None:
        q = self._fails.get(key)
        if q is None:
            return None
        cutoff = self._clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._fails[key]
            return None
        return q

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` (``token_key(client, token)``) may try again; 0 when it is
        not blocked."""
        q = self._recent(key)
        if q is None or len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window - self._clock())

    def failed(self, key: str) -> int:
        """Count a failure for ``key``; returns its failures in the window, counting this
        one, and ``max_failures + 1`` for any failure beyond the budget."""
        q = self._recent(key)
        if q is None:
            q = deque(maxlen=self.max_failures)
            self._fails[key] = q
            while len(self._fails) > self.max_clients:
                self._fails.popitem(last=False)
        self._fails.move_to_end(key)
        before = len(q)
        q.append(self._clock())
        return before + 1

    def succeeded(self, key: str) -> None:
        self._fails.pop(key, None)

    def reset(self) -> None:
        """Forget every failure (tests)."""
        self._fails.clear()
