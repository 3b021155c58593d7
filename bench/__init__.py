"""Benchmarks. Each module runs on its own (``python -m bench.<name>``) and prints its figures
and the baseline it ran beside; ``python -m bench`` runs them all with short defaults."""
