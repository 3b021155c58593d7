"""Small utilities shared by every SignalBeam process: logging setup, process helpers,
self-signed certificates.

Nothing here knows about agents, hubs or the TUI; it only keeps the three processes
behaving alike (same log formats, same shutdown handling, same kind of certificate).
"""
