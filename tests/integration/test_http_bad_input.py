"""Hostile and malformed input at a real agent process's local API, over raw sockets.

Requests aiohttp refuses before any handler runs (its protocol answers them itself) must
still get the API's one JSON error shape; bodies nested past the recursion limit must be a
client error, not a 500; a metrics window of centuries must be refused by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.ports import free_port

REPO = Path(__file__).resolve().parents[2]

GET = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
POST = b"POST /v1/reconcile HTTP/1.1\r\nHost: x\r\n"

# (name, raw request). Each is refused by aiohttp's parser, before the app sees it.
MALFORMED: list[tuple[str, bytes]] = [
    ("too many headers", GET + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n"),
    ("header over 8190 bytes", GET + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"),
    ("URL over 8190 bytes", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("not a request line", b"GARBAGE\r\n\r\n"),
    ("bad method", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("bad version", b"GET / HTTP/9.x\r\nHost: x\r\n\r\n"),
    (
        "Content-Length and Transfer-Encoding",
        POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    ("two Content-Lengths", POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef"),
    ("negative Content-Length", POST + b"Content-Length: -1\r\n\r\n"),
    ("unknown Transfer-Encoding", POST + b"Transfer-Encoding: gzip\r\n\r\n"),
    ("space in a header name", GET + b"Bad Header: y\r\n\r\n"),
    ("control character in a header", GET + b"X: a\x01b\r\n\r\n"),
    ("bad chunk size", POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    ("TLS on the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: x\n\n"),
    ("folded header", GET + b"X: a\r\n b\r\n\r\n"),
    ("NUL in the URL", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("HTTP/1.1 without Host", b"GET /health/live HTTP/1.1\r\n\r\n"),
]


def _exchange(port: int, data: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes; returns status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def _request(
    port: int, method: str, path: str, token: str | None, body: bytes = b"", ctype: str = ""
) -> tuple[int, dict[str, str], bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return _exchange(port, head.encode() + body)


def _error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    assert set(err) <= {"code", "message", "field", "details"}, err
    return dict(err)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


class Agent:
    def __init__(self, config: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.port = port
        self.proc = proc
        self.made = 0

    def token(self, role: str) -> str:
        self.made += 1  # the agent lives for the module: names must not repeat
        name = f"t-{role}-{self.made}"
        out = _cli("token", "create", "--name", name, "--role", role, "--config", str(self.config))
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("bad-input")
    port = free_port()
    config = tmp / "agent.toml"
    config.write_text(
        f"""
data_dir = "data"
device_id = "bad-input"
engine_socket = "unix://{tmp}/no-engine.sock"
[http]
port = {port}
"""
    )
    log = (tmp / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp / "agent.log").read_text()
            try:
                if _request(port, "GET", "/health/live", None)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the agent's API did not come up in 60 s"
            time.sleep(0.2)
        yield Agent(config, port, proc)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.mark.parametrize("name,data", MALFORMED, ids=[name for name, _ in MALFORMED])
def test_requests_aiohttp_refuses_get_the_json_error_shape(
    agent: Agent, name: str, data: bytes
) -> None:
    status, headers, body = _exchange(agent.port, data)
    assert status == 400, (name, status, body)
    err = _error(status, headers, body)
    assert err["code"] == "bad_request"
    assert err["message"].startswith("malformed request: ")
    # The answer names the problem without echoing the request's bytes back.
    assert "b'" not in err["message"] and "aaaaaaaa" not in err["message"]
    # And the agent is still serving.
    assert _request(agent.port, "GET", "/health/live", None)[0] == 200


def test_a_body_that_breaks_off_mid_stream_is_answered_400(agent: Agent) -> None:
    # Headers and a good first chunk, then a bad chunk size. aiohttp's C parser used to
    # leave the handler waiting on the body until the client gave up.
    admin = agent.token("admin")
    head = (
        "POST /v1/tokens HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {admin}\r\nContent-Type: application/json\r\n"
        'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n'
    ).encode()
    with socket.create_connection(("127.0.0.1", agent.port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head)
        # Only to make a separate segment likely (the handler is then reading the body);
        # the answer must be the same either way, so nothing depends on this pause.
        time.sleep(0.3)
        s.sendall(b"zz\r\nabc\r\n0\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head_part, _, body = out.partition(b"\r\n\r\n")
    status = int(head_part.split()[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in head_part.decode().split("\r\n")[1:])
    }
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    err = _error(status, headers, body)
    assert (status, err["code"]) == (400, "bad_request"), err
    assert err["message"].startswith("malformed request"), err


def test_deeply_nested_json_bodies_are_client_errors(agent: Agent) -> None:
    admin = agent.token("admin")
    for nested in (b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000):
        status, headers, body = _request(
            agent.port, "POST", "/v1/tokens", admin, nested, "application/json"
        )
        err = _error(status, headers, body)
        assert (status, err["code"], err.get("field")) == (400, "bad_request", "body"), err
        status, headers, body = _request(
            agent.port, "POST", "/v1/local/desired", admin, nested, "application/json"
        )
        err = _error(status, headers, body)
        assert status == 422 and err["code"] == "invalid", err
        assert all(d["line"] == 1 for d in err["details"]), err


def test_metrics_window_of_centuries_is_refused_by_name(agent: Agent) -> None:
    viewer = agent.token("viewer")
    for query, field in [
        ("since=-825392257m", "since"),
        ("since=-999999999d", "since"),
        ("until=999999999999", "until"),
        ("resolution=raw&since=0001-01-01T00:00:00Z", "since"),
    ]:
        status, headers, body = _request(agent.port, "GET", f"/v1/metrics?{query}", viewer)
        err = _error(status, headers, body)
        assert (status, err["code"], err["field"]) == (422, "invalid", field), (query, err)
    # The widest window allowed is answered (from the data there is, not chunk by chunk).
    for resolution in ("raw", "1m", "1h"):
        status, _, body = _request(
            agent.port, "GET", f"/v1/metrics?resolution={resolution}&since=0", viewer
        )
        assert status == 200, body
        assert json.loads(body)["resolution"] == resolution
