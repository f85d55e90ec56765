"""Where a verdict's time and memory go: each claim's wall time and peak memory on one target, in one process.

    python bench/bench_claims.py smollm2 [--profile ci] [--claim ID ...] [--sort seconds|memory]

The target is built once; then each claim runs alone through spec.runner.run_claim under the profile, as ``check -j
1`` runs it. Before each claim the process's peak resident set (VmHWM) is reset to its current size (Linux:
``/proc/self/clear_refs``), so the peak read after it is that claim's own; the table gives it, its rise over the
claim's start (a heap keeps some of what earlier claims freed) and the peak as a multiple of the weights. Times
stretch with the load (printed); peaks hardly move. Issue #13 asks a verdict on a 1B-parameter model in <= 15 min at
<= 1.5x its weights: this is the profile that says which claims stand between a model and that.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def status_bytes(name: str) -> int:
    """A ``Name: N kB`` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} in /proc/self/status (this benchmark needs Linux)")


def reset_peak() -> None:
    """VmHWM back to the current resident size (writing 5 to clear_refs, Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("target", help="a target spec, e.g. smollm2 or bench.llama_1b:factory")
    parser.add_argument("--profile", default="ci", choices=("ci", "dev", "thorough"))
    parser.add_argument("--claim", action="append", default=[], help="only these claim IDs (repeatable)")
    parser.add_argument("--sort", choices=("seconds", "memory", "catalog"), default="catalog")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from spec import profiles
    from spec.catalog import ordered
    from spec.check import Check
    from spec.pool import weights_bytes

    started = time.perf_counter()
    load = os.getloadavg()
    check = Check(args.target, profile=profiles.load(args.profile))
    built = time.perf_counter() - started
    resting = status_bytes("VmRSS")
    weights = weights_bytes(check.target)
    print(f"target {args.target}: built in {built:.1f} s, resident {resting / MB:.0f} MB, weights "
          f"{weights / MB:.0f} MB (peak while building {status_bytes('VmHWM') / MB:.0f} MB); profile {args.profile}; "
          f"load average {load[0]:.2f}", flush=True)
    rows = []
    for c in [c for c in ordered() if not args.claim or c.id in args.claim]:
        reset_peak()
        before = status_bytes("VmRSS")  # the heap may keep what an earlier claim freed: its own peak is above this
        t = time.perf_counter()
        r = check.run(c)
        seconds = time.perf_counter() - t
        peak = status_bytes("VmHWM")
        rows.append((c.id, r.status, r.examples, seconds, peak, peak - before))
        print(f"{c.id:7s} {r.status:16s} {r.examples:4d} examples {seconds:8.1f} s  peak {peak / MB:6.0f} MB, "
              f"+{(peak - before) / MB:.0f} MB over its start", flush=True)
    if args.sort != "catalog":
        rows.sort(key=lambda row: -(row[3] if args.sort == "seconds" else row[4]))
    total = sum(row[3] for row in rows)
    print("\n| claim | status | examples | seconds | share | process peak | above the claim's start | peak / weights |")
    print("|---|---|---|---|---|---|---|---|")
    for cid, status, examples, seconds, peak, own in rows:
        ratio = f"{peak / weights:.2f}" if weights else "-"
        print(f"| {cid} | {status} | {examples} | {seconds:.1f} | {100 * seconds / max(total, 1e-9):.0f}% | "
              f"{peak / MB:.0f} MB | {own / MB:.0f} MB | {ratio} |")
    top = max((row[4] for row in rows), default=resting)
    print(f"\n{len(rows)} claims in {total:.0f} s (+ {built:.0f} s building); the highest peak {top / MB:.0f} MB "
          f"({top / max(weights, 1):.2f}x the weights); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
