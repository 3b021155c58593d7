"""The agent's local HTTP API for field techs (aiohttp): status, containers, logs, metrics,
events, local actions; bearer tokens per technician; every mutating call audited.

Entry points: ``agent.http.app.build_app(ctx)`` (tests), ``agent.http.server.start(ctx)``
(the daemon), ``agent.http.cli.add_token_commands(subparsers)`` (the CLI). See
docs/http-api.md.
"""
