"""pyinfra deploys for SignalBeam Edge (hub.py, agent.py) and their pure helpers.

A package only so the deploy files can import ``deploy.validate`` and ``deploy.render``
wherever pyinfra is started from; nothing in agent/, hub/ or tui/ imports it, and it is not
part of the installed distribution. See docs/deploy.md.
"""
