"""Textual screens of ``signalbeam tui``: the tabs (``main.py``) and a device (``device.py``)."""
