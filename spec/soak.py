"""Soak: the whole catalog, N times, with fresh random seeds, on the targets given; failures counted per claim.

    python -m spec.soak --runs N TARGET [TARGET ...] [--claim ID ...] [--jobs J] [--out FILE.md] [--minutes M]

The ``ci`` profile is derandomized, so a flake — a claim that fails a correct target for some seeds only — can
hide there for ever. The soak runs the ``dev`` profile (random seeds, no example database, so a failure found in
one run is not replayed in the next) N times per target and counts, per claim and target, the runs that failed.
The built-in targets' expected deviations apply as in ``check`` (a listed deviation that passes in some runs
counts as a failure: its verdict depends on the seed).

A deterministic claim (kind exact or numeric) must never fail a correct target: 0 failures allowed. A statistical
claim states its per-run false-alarm rate alpha (``Claim.alpha``); its failures are shown beside N x alpha, the
number a correct target is expected to show. Exits 1 when a deterministic claim failed in any run, or a
statistical one failed more often than a binomial(N, alpha) count would reach with probability 1e-3.

``--minutes M`` stops each target after the run that ends past M minutes (the table says how many runs each got);
with ``--out`` every target's tallies so far are also written after each of its runs, to FILE.md.TARGET.json, so
a soak cut short still leaves its counts.

Run by ``nox -s soak -- --runs N TARGET ...``; not part of CI (it is long by design).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from spec import profiles
from spec.runner import FAILING, HELD

SOAK_PROFILE = "dev"


@dataclass
class Tally:
    """One claim on one target over the soak's runs."""

    claim: str
    target: str
    kind: str
    alpha: float | None
    runs: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_failure: str = ""  # the detail and counterexample of the first failing run, to fix the flake at its root
    seconds: float = 0.0


def soak_target(spec: str, runs: int, claim_ids: Sequence[str] = (), device: str = "cpu",
                dtype: str = "float32", minutes: float | None = None, out: str | None = None) -> list[Tally]:
    """Run the catalog (or the named claims) ``runs`` times on one target, loaded once; tally each claim.

    Stops early after the run that ends past ``minutes``; with ``out``, writes the tallies so far after each run.
    """
    import torch
    from hypothesis import settings

    from spec.catalog import CATALOG, ordered
    from spec.expectations import BUILTIN, for_target
    from spec.runner import run_claim
    from spec.targets.registry import resolve

    torch.set_num_threads(1)
    profiles.load(SOAK_PROFILE)
    base = settings(settings.get_profile(SOAK_PROFILE), database=None, derandomize=False)
    claims = [c for c in ordered() if not claim_ids or c.id in claim_ids]
    target = resolve(spec, device=device, dtype=dtype)
    deviations = for_target(BUILTIN, spec, set(CATALOG))
    tallies = {c.id: Tally(c.id, spec, c.kind, c.alpha) for c in claims}
    started = time.perf_counter()
    for i in range(runs):
        for c in claims:
            r = run_claim(c, target, profile=base, deviation=deviations.get(c.id), target_spec=spec,
                          profile_name=SOAK_PROFILE)
            t = tallies[c.id]
            t.runs += 1
            t.seconds += r.seconds
            t.statuses[r.status] = t.statuses.get(r.status, 0) + 1
            if r.status in FAILING:
                t.failed += 1
                if not t.first_failure:
                    t.first_failure = f"run {i + 1}: {r.detail}\n{r.counterexample}"
        print(f"soak {spec}: run {i + 1}/{runs} done; failures so far "
              f"{sum(t.failed for t in tallies.values())}", file=sys.stderr, flush=True)
        if out:
            with open(f"{out}.{spec.replace(':', '-').replace('/', '-')}.json", "w", encoding="utf-8") as f:
                json.dump([asdict(t) for t in tallies.values()], f)
        if minutes is not None and time.perf_counter() - started > 60 * minutes:
            break
    return list(tallies.values())


def too_many(t: Tally) -> bool:
    """A deterministic claim that failed at all, or a statistical one failing beyond its stated alpha."""
    if t.failed == 0:
        return False
    if t.kind != "statistical" or t.alpha is None:
        return True
    from scipy import stats

    return float(stats.binom.sf(t.failed - 1, t.runs, t.alpha)) < 1e-3


def markdown(tallies: list[Tally], command: str, seconds: float) -> str:
    """The per-claim table: failures per target, with the allowance (0, or N x alpha for statistical claims)."""
    targets = list(dict.fromkeys(t.target for t in tallies))
    claims = list(dict.fromkeys(t.claim for t in tallies))
    by = {(t.claim, t.target): t for t in tallies}
    runs = ", ".join(f"`{t}` {max(x.runs for x in tallies if x.target == t)}" for t in targets)
    lines = [f"Soak: `{command}`, profile `{SOAK_PROFILE}` (random seeds), {seconds:.0f} s; runs per target: {runs}.",
             "",
             "Cells are failed runs / runs; a deterministic claim allows 0, a statistical one shows N x alpha.", "",
             "| claim | kind | allowed | " + " | ".join(f"`{t}`" for t in targets) + " |",
             "|---|---|---|" + "---|" * len(targets)]
    for cid in claims:
        row = [by[(cid, t)] for t in targets if (cid, t) in by]
        kind = row[0].kind
        alpha = row[0].alpha
        allowed = "0" if kind != "statistical" else (f"N x {alpha:g}" if alpha is not None else "alpha not stated")
        cells = []
        for t in targets:
            tally = by.get((cid, t))
            if tally is None:
                cells.append("")
                continue
            ran = tally.runs - sum(n for s, n in tally.statuses.items()
                                   if s not in (*HELD, *FAILING, "expected deviation"))
            mark = " **(too many)**" if too_many(tally) else ""
            cells.append(f"{tally.failed}/{tally.runs}{mark}" if ran else "not run")
        lines.append(f"| {cid} | {kind} | {allowed} | " + " | ".join(cells) + " |")
    bad = [tally for tally in tallies if too_many(tally)]
    if bad:
        lines += ["", "## Failures", ""]
        for b in bad:
            lines += [f"### {b.claim} on `{b.target}`: {b.failed}/{b.runs}", "", "```", b.first_failure.strip(),
                      "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spec.soak", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="target specs, e.g. reference:llama-tiny hf:llama")
    parser.add_argument("--runs", type=int, default=10, help="catalog runs per target (default 10)")
    parser.add_argument("--claim", action="append", default=[], help="only these claim IDs (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="targets soaked at once, one process each (default 1)")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop each target after the run that ends past this many minutes")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.jobs < 1:
        print(f"--runs and --jobs must be >= 1, got {args.runs} and {args.jobs}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    tallies: list[Tally] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        n = len(args.targets)
        for part in pool.map(soak_target, args.targets, [args.runs] * n, [tuple(args.claim)] * n, ["cpu"] * n,
                             ["float32"] * n, [args.minutes] * n, [args.out] * n):
            tallies += part
    command = "python -m spec.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(tallies, command, time.perf_counter() - started)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    return 1 if any(too_many(t) for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
