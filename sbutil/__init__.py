"""Small utilities shared by every SignalBeam process: logging setup and process helpers.

Nothing here knows about agents, hubs or the TUI; it only keeps the three processes
behaving alike (same log formats, same shutdown handling).
"""
