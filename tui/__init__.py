"""The operator's ``signalbeam`` command: CLI verbs now, the Textual TUI later.

Talks to the hub over NATS only (``tui.client``); never imports ``hub`` or ``agent``.
"""
