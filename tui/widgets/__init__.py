"""Textual widgets of ``signalbeam tui``: one view per main tab."""
