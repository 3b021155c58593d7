"""A TCP proxy on loopback that a test can cut, silence and restore, to simulate a leaf link
going down: reset (``cut``) or held open but moving no bytes (``silence``)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from tests.harness.ports import free_port


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``.

    - ``cut()`` drops every connection (closed, so both ends see a reset or EOF) and refuses
      new ones (accepted then closed at once) until ``restore()``.
    - ``silence()`` keeps every connection open but forwards nothing either way until
      ``restore()``: a dead path with no RST (a cellular dead zone, a NAT that forgot the
      flow). Bytes sent meanwhile wait in the sockets' buffers and flow on restore, as over a
      link that stalled; new connections are accepted and connected upstream, but stay silent
      too.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._cut = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self.connections_total = 0
        # TCP payload forwarded, client -> target ("up") and back ("down"): what a metered
        # link is billed for (bench/bench_wire_bytes.py).
        self.bytes_up = 0
        self.bytes_down = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="tcp-proxy")
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def is_silent(self) -> bool:
        return not self._flowing.is_set()

    def silence(self) -> None:
        """Stop forwarding bytes, closing nothing (see the class docstring)."""
        self._flowing.clear()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            conns = list(self._conns)
            self._conns.clear()
        for s in conns:
            _close(s)

    def restore(self) -> None:
        """Undo ``cut()`` and ``silence()``."""
        with self._lock:
            self._cut = False
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self.cut()
        _close(self._listener)
        self._thread.join(2)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self.connections_total += 1
            threading.Thread(
                target=self._pump, args=(client, upstream), daemon=True, name="tcp-proxy-pump"
            ).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        try:
            a.setblocking(False)
            b.setblocking(False)
            sel.register(a, selectors.EVENT_READ, b)
            sel.register(b, selectors.EVENT_READ, a)
            while not self._closed:
                if a.fileno() < 0 or b.fileno() < 0:
                    return
                if not self._flowing.is_set():
                    # Silenced: read nothing, so nothing is forwarded and nothing is closed.
                    self._flowing.wait(0.2)
                    continue
                for key, _ in sel.select(timeout=0.2):
                    if not self._flowing.is_set():
                        break  # silenced while waiting: what arrived since stays unread
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = key.data
                    data = src.recv(65536)
                    if not data:
                        return
                    if src is a:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            _close(a)
            _close(b)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
