"""What checking signatures costs an agent: the desired intake's pure decision
(``agent.sync.intake.admit``) per revision, signed against unsigned, and the resident memory of
loading ``cryptography`` for the first check.

Three figures, all in this run, medians of ``--runs`` rounds of ``--n`` revisions each:

- baseline: an unsigned revision on a fleet that does not require signatures (what every
  agent did before signed bundles: validation of the spec is not even reached);
- signed: a signed revision (two containers, pinned) checked against a trust set of two keys,
  with a two-step trust chain in the document (a rotation in flight);
- a trust chain alone: a first trust set taken on first use, the bundle unsigned (refused).

The load average is printed before and after (a busy box inflates all alike; compare within
a run). Bounded: ``--n`` x ``--runs`` admissions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.sync.intake import admit  # noqa: E402
from bundles import from_dict  # noqa: E402
from bundles.signing import TrustSet, generate_key, sign_bundle, sign_trust_set  # noqa: E402
from protocol.desired import DesiredState  # noqa: E402

D = "sha256:" + "c" * 64


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_of(code: str) -> int:
    """Resident set (KiB, VmRSS) of a fresh interpreter after running ``code`` (the peak would
    hide a module loaded after the import-time high-water mark)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nprint(next(l for l in open('/proc/self/status')"
            " if l.startswith('VmRSS')).split()[1])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return int(out.stdout.split()[-1])


def per_call_us(doc: DesiredState, trust: TrustSet, n: int, runs: int, ok: bool) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            a = admit(doc, trust)
        samples.append((time.perf_counter() - start) / n * 1e6)
        assert a.ok is ok, a.reason
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    print(f"load average before: {loadavg()}")
    old, old_pub = generate_key()
    new, new_pub = generate_key()
    spec = from_dict(
        {
            "bundle": "warehouse",
            "version": "1.3.0",
            "containers": [
                {"name": "sensor", "image": f"registry.example/acme/sensor:1.3.0@{D}",
                 "env": {"LOG_LEVEL": "info"}, "ports": [{"container": 8080, "host": 8080}]},
                {"name": "relay", "image": f"registry.example/acme/relay:1.3.0@{D}"},
            ],
        }
    )  # fmt: skip
    chain = (
        sign_trust_set(1, True, [old_pub], old).to_dict(),
        sign_trust_set(2, True, [old_pub, new_pub], old).to_dict(),
    )
    base = TrustSet(1, True, (old_pub,))
    lax = TrustSet(0, False, ())
    sig = sign_bundle(spec, new)
    unsigned = DesiredState(7, spec.to_dict())
    signed = DesiredState(7, spec.to_dict(), signatures=(sig,), trust=chain)
    chain_only = DesiredState(7, spec.to_dict(), trust=(chain[0],))
    b = per_call_us(unsigned, lax, args.n, args.runs, True)
    s = per_call_us(signed, base, args.n, args.runs, True)
    c = per_call_us(chain_only, TrustSet(0, False, ()), args.n, args.runs, False)
    print(f"admit, unsigned, signatures not required (baseline): {b:8.1f} us/revision")
    print(f"admit, signed, 2-step chain, 2 keys:                  {s:8.1f} us/revision")
    print(f"admit, 1-step chain, unsigned bundle (refused):      {c:8.1f} us/revision")
    bare = rss_of("import agent.sync.intake")
    loaded = rss_of(
        "import agent.sync.intake\nfrom bundles.signing import _verify\n_verify('ed25519:'"
        " + 'A' * 43, 'AA', b'')"
    )
    print(f"RSS, intake imported: {bare / 1024:.1f} MiB; after a first check: "
          f"{loaded / 1024:.1f} MiB (cryptography loaded on first use)")  # fmt: skip
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
