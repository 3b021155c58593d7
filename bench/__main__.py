"""Run every benchmark in bench/ with its default (short, bounded) settings."""

from __future__ import annotations

import pkgutil
import runpy
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if not names:
        print("no benchmarks yet")
        return 0
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.monotonic()
        try:
            runpy.run_module(f"bench.{name}", run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"bench.{name} failed: {exc!r}")
            failed.append(name)
        print(f"=== bench.{name}: {time.monotonic() - start:.1f}s ===", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
