"""Real-service test harness: processes started on free loopback ports, stopped by PID.

Importable by tests/ and bench/ alike (``from tests.harness import ...``).
"""
