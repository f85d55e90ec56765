"""Peak memory of checking a model: loading a target alone, and running REF-1 on it, in one run.

    python bench/bench_memory.py [--target smollm2] [--examples 2]

Each measurement runs in a fresh Python process (this script re-invoked with ``--child``)
and reads that process's peak resident set size, VmHWM in /proc/self/status, so the
two figures are independent of each other and of this parent. REF-1 builds a second
reference model from the target's weights (``spec.edits.independent_reference``);
since it shares them (meta-device construction, ``assign=True``, views), its peak
should stay close to the target's own: the goal is at most 10% above it.

Four fresh processes: the target alone; the target and OUT-7 (a claim that runs only the
target's own forward pass: what checking anything costs, Hypothesis included); the target
and REF-1; and the target and REF-1 with the reference built as before issue #13 (a full
model allocated and the weights copied in), for comparison. Prints the peaks, the
weights' size, the ratios and the load average (a shared machine slows, but peak RSS
hardly moves).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


MODES = {
    "load": "target loaded alone",
    "out7": "target + OUT-7 (a claim running the target's forward)",
    "ref1": "target + REF-1",
    "ref1-copy": "target + REF-1 copying the weights (as before issue #13)",
}


def copying_reference(target: Any) -> Any:
    """REF-1's reference as it was built before issue #13: allocated in full and the weights copied in."""
    from reference.model import Transformer

    converted = target.reference_model()
    fresh = Transformer(converted.cfg, device=converted.device, dtype=converted.dtype)
    fresh.load_state_dict(converted.state_dict(), strict=True)
    fresh.attention_impl = "explicit"
    return fresh.eval()


def child(target_name: str, mode: str, examples: int) -> dict[str, object]:
    """Load the target and run the mode's claim on it; report peak RSS and the weights' bytes."""
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    from spec.targets.registry import resolve

    target = resolve(target_name)
    model = target.reference_model() if "reference_model" in target.capabilities else None
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) if model is not None else 0
    del model
    result: dict[str, object] = {"weights": weights, "status": "-"}
    if mode != "load":
        from hypothesis import settings

        import spec.claims  # noqa: F401  (registers the claims in the catalog)
        from spec.catalog import CATALOG
        from spec.claims import ref
        from spec.runner import run_claim

        if mode == "ref1-copy":
            ref.independent_reference = copying_reference  # type: ignore[assignment]
        profile = settings(max_examples=examples, derandomize=True, database=None, deadline=None)
        outcome = run_claim(CATALOG["OUT-7" if mode == "out7" else "REF-1"], target, profile=profile)
        result["status"] = f"{outcome.status}, {outcome.examples} examples"
    result["peak"] = peak_rss_bytes()
    return result


def measure(target_name: str, mode: str, examples: int) -> dict[str, object]:
    """Run ``child`` in a fresh process and return what it printed."""
    cmd = [sys.executable, __file__, "--child", mode, "--target", target_name, "--examples", str(examples)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", default="smollm2", help="a target spec (default smollm2)")
    parser.add_argument("--examples", type=int, default=2, help="the claims' max_examples (default 2)")
    parser.add_argument("--child", choices=tuple(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.target, args.child, args.examples)))
        return
    runs = {mode: measure(args.target, mode, args.examples) for mode in MODES}
    peak = {mode: int(str(r["peak"])) for mode, r in runs.items()}
    weights = int(str(runs["load"]["weights"]))
    mb = 1e6
    print(f"target {args.target}: weights {weights / mb:.0f} MB; claims run with max_examples={args.examples}")
    for mode, what in MODES.items():
        print(f"  peak RSS, {what + ':':58s} {peak[mode] / mb:6.0f} MB  ({runs[mode]['status']})")
    for mode in ("ref1", "ref1-copy"):
        print(f"{MODES[mode]}: {peak[mode] / peak['load']:.3f}x the target alone (goal <= 1.10 for REF-1), "
              f"{peak[mode] / peak['out7']:.3f}x OUT-7's; adds {(peak[mode] - peak['load']) / mb:.0f} MB = "
              f"{(peak[mode] - peak['load']) / max(weights, 1):.2f}x the weights")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
