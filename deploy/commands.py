"""The shell commands the deploys build by hand: hub init, a pre-TLS cluster's route-certs
and device enrollment.

Pure (pyinfra's command types only, no host context), so the unit tests can check the
quoting, the guards and that secrets are masked in what pyinfra prints.
"""

from __future__ import annotations

from pyinfra.api.command import QuoteString, StringCommand
from pyinfra.api.hiddenvalue import HiddenValue

from deploy.settings import AgentSettings, HubSettings


def init_command(hub: HubSettings) -> StringCommand:
    """``signalbeam-hub init`` as the hub user, guarded like init's own refusal (hub.toml or
    hub.db present = initialised), its stdout (the admin key) into a root-only file."""
    data = hub.data_dir
    argv: list[object] = [
        "runuser",
        "-u",
        hub.user,
        "--",
        QuoteString(f"{hub.package.bin}/signalbeam-hub"),
        "init",
        "--data",
        QuoteString(data),
        "--client-port",
        str(hub.client_port),
        "--leafnode-port",
        str(hub.leafnode_port),
        "--monitor-port",
        str(hub.monitor_port),
        "--http-port",
        str(hub.http_port),
        "--host",
        QuoteString(hub.host),
        "--http-host",
        QuoteString(hub.http_host),
        "--public-host",
        QuoteString(hub.public_host),
    ]
    # The TLS files are uploaded before init: it checks them, and prints tls:// URLs for a
    # TLS client port.
    if hub.leaf_tls:
        argv += ["--leaf-tls-cert", QuoteString(hub.remote_leaf_cert)]
        argv += ["--leaf-tls-key", QuoteString(hub.remote_leaf_key)]
    if hub.client_tls:
        argv += ["--client-tls-cert", QuoteString(hub.remote_client_cert)]
        argv += ["--client-tls-key", QuoteString(hub.remote_client_key)]
    if hub.cluster_hosts:
        # This hub runs node 0; the other nodes' configs are written beside it
        # (DATA/nats/node<i>.conf, docs/deploy.md "A hub NATS cluster").
        argv += ["--cluster-hosts", QuoteString(",".join(hub.cluster_hosts))]
        argv += ["--cluster-local", str(hub.cluster_node)]
        argv += ["--cluster-port", str(hub.cluster_port)]
    if hub.nats_auth:
        argv += ["--nats-auth", hub.nats_auth]
    if hub.require_signed_bundles is False:
        argv.append("--allow-unsigned-bundles")
    if not hub.litestream:
        argv.append("--no-litestream")
    elif hub.replica_url:
        argv += ["--replica-url", QuoteString(hub.replica_url)]
    return StringCommand(
        "test -e",
        QuoteString(f"{data}/hub.toml"),
        "|| test -e",
        QuoteString(f"{data}/hub.db"),
        "|| ( umask 077 &&",
        *argv,
        ">",
        QuoteString(hub.init_output),
        ")",
    )


def enroll_command(agent: AgentSettings) -> StringCommand:
    """``signalbeam-agent enroll``, guarded by the credentials file. The token and the
    bootstrap password are HiddenValues: pyinfra prints them as *MASKED*; the password
    travels in the environment (``SB_ENROLL_PASSWORD``), the token on standard input
    (``--token-file -``, written by the shell's builtin ``printf``): neither is in any
    process's argv, which every local user can read in ``ps``."""
    assert agent.enroll_token is not None and agent.hub is not None
    hub: str | HiddenValue = agent.hub
    if "@" in agent.hub:  # nats://enroll:PASSWORD@host:port: the URL itself is a secret
        hub = HiddenValue(agent.hub)
    bits: list[object] = ["test -e", QuoteString(agent.credentials_file), "||"]
    bits += ["printf '%s\\n'", QuoteString(HiddenValue(agent.enroll_token)), "|"]
    if agent.enroll_password is not None:
        password = QuoteString(HiddenValue(agent.enroll_password))
        # A shell assignment, not `env VAR=...`: no extra process carries it in its argv.
        bits.append(StringCommand("SB_ENROLL_PASSWORD=", password, _separator=""))
    bits += [
        QuoteString(f"{agent.package.bin}/signalbeam-agent"),
        "enroll",
        "--config",
        QuoteString(agent.config_path),
        "--hub",
        QuoteString(hub),
        "--token-file",
        "-",
    ]
    if agent.tags:
        bits += ["--tags", QuoteString(",".join(agent.tags))]
    return StringCommand(*bits)


def route_certs_command(hub: HubSettings) -> StringCommand:
    """A cluster initialised before route TLS: its route CA and node certificates, once
    (``signalbeam-hub route-certs``), guarded by the CA file so it runs at most once."""
    data = hub.data_dir
    return StringCommand(
        "test -e",
        QuoteString(f"{data}/tls/route/ca.pem"),
        "|| runuser -u",
        hub.user,
        "--",
        QuoteString(f"{hub.package.bin}/signalbeam-hub"),
        "route-certs",
        "--data",
        QuoteString(data),
    )
