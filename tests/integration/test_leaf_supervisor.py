"""The leaf supervisor's kill / restart / stop interleavings, each forced, on a real
nats-server: whatever phase a restart is in when ``stop()`` begins (the back-off sleep
before it, the new process starting), stop returns, nothing is started after it, and no
process running the leaf's config is left.

The phases are held open deterministically: a long back-off keeps the supervisor in its
sleep; a wrapper around nats-server that waits for a go file keeps a restart in its
"started, not yet accepting clients" phase.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path

from agent.sync.leaf import LeafServer, LeafSettings, free_port
from tests.harness.binaries import require_binary
from tests.harness.procs import pids_with_arg
from tests.harness.wait import eventually


def settings(tmp: Path, **kw: object) -> LeafSettings:
    # The hub URL is a closed port: a leaf accepts local clients whether or not it is linked.
    return LeafSettings(
        "dev-ls",
        tmp / "leaf",
        f"nats-leaf://127.0.0.1:{free_port()}",
        **kw,  # type: ignore[arg-type]
    )


def held_restart_wrapper(tmp: Path) -> Path:
    """nats-server for the first start; every later start writes ``restarting`` and waits
    for ``go`` before it becomes nats-server (a restart held before it accepts clients)."""
    script = tmp / "nats-wrapper.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'd="{tmp}"\n'
        'if [ -e "$d/first-done" ]; then\n'
        '  touch "$d/restarting"\n'
        '  while [ ! -e "$d/go" ]; do sleep 0.05; done\n'
        "fi\n"
        'touch "$d/first-done"\n'
        f'exec {require_binary("nats-server")} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def kill_leaf(leaf: LeafServer) -> int:
    pid = leaf.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_stop_while_a_restart_is_starting(tmp_path: Path) -> None:
    leaf = LeafServer(settings(tmp_path, binary=str(held_restart_wrapper(tmp_path))))
    await leaf.start()
    await kill_leaf(leaf)
    # The supervisor has started the replacement and waits for it to accept clients.
    await eventually(lambda: (tmp_path / "restarting").exists(), "the restart under way")
    held = leaf.pid
    await leaf.stop()
    # Had the held start survived the stop, it would now become a nats-server.
    (tmp_path / "go").touch()
    assert pids_with_arg(leaf.conf_path) == [], "a process of the leaf's config outlived stop"
    assert leaf.pid == held and leaf.restarts == 0 and not leaf.alive()


async def test_stop_during_the_back_off_before_a_restart(tmp_path: Path) -> None:
    # An hour's back-off: the supervisor is in its sleep whenever stop comes.
    leaf = LeafServer(settings(tmp_path, backoff_min=3600.0, backoff_max=3600.0))
    await leaf.start()
    killed = await kill_leaf(leaf)
    await eventually(lambda: not leaf.alive(), "the kill seen")
    await leaf.stop()
    assert leaf.pid == killed and leaf.restarts == 0
    assert pids_with_arg(leaf.conf_path) == []


async def test_a_kill_racing_stop_at_every_step_leaves_nothing(tmp_path: Path) -> None:
    """Stop issued 0..5 loop iterations after the kill: the exit not yet seen, being seen,
    the back-off begun; each time stop returns and no process of the config is left."""
    for steps in range(6):  # bounded: six leaf starts
        leaf = LeafServer(settings(tmp_path / str(steps), backoff_min=0.0))
        await leaf.start()
        await kill_leaf(leaf)
        for _ in range(steps):
            await asyncio.sleep(0)
        await leaf.stop()
        assert pids_with_arg(leaf.conf_path) == [], f"left running after {steps} steps"
        assert not leaf.alive()


async def test_stop_after_a_restart_leaves_no_process(tmp_path: Path) -> None:
    leaf = LeafServer(settings(tmp_path, backoff_min=0.0))
    await leaf.start()
    killed = await kill_leaf(leaf)
    await eventually(lambda: leaf.restarts == 1 and leaf.alive(), "restarted")
    assert leaf.pid != killed and pids_with_arg(leaf.conf_path) == [leaf.pid]
    await leaf.stop()
    assert pids_with_arg(leaf.conf_path) == []
