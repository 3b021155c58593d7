"""Textual screens of ``signalbeam tui`` (plus the pure view model and the hub session)."""
