"""Free loopback ports for the processes a test starts."""

from __future__ import annotations

import socket
import time

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and this process has not handed out yet."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port found in 100 tries")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (a hub cluster on one machine puts
    node i on each configured port plus i)."""
    for _ in range(100):
        first = free_port()
        block = range(first, first + n)
        if first + n > 65535 or any(p in _handed_out for p in block[1:]):
            continue
        try:
            socks = []
            for port in block[1:]:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _handed_out.update(block)
        return first
    raise RuntimeError(f"no {n} consecutive free loopback ports found in 100 tries")
