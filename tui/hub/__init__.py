"""The TUI's side of the hub link: the long-lived session (``session.py``) and the reads a
view makes of a hub of any age (``fleet.py``). NATS only: this is not the ``hub`` package."""
