"""Run the whole catalog against every mutant of the zoo and write the kill matrix (docs/kill-matrix.md).

A mutant is killed when at least one claim fails on it. For every kill the matrix
records two numbers, both deterministic under the derandomized ``ci`` profile:

- examples to kill: how many examples Hypothesis generated for that claim up to and
  including the first one that failed (1 = the first example already failed);
- size: the size of the shrunk counterexample, counted as the scalars the claim drew in
  it (each drawn tensor counts its elements, each drawn number one, lists and tuples the
  sum of their items; values the claim derives from drawn seeds, such as random hidden
  states, are not counted). Shrinking starts from the first failure alone
  (``zoo_settings``: no search for further bugs, which is timed), so for a deterministic
  claim this number is as stable as the first.

``next-token-spec zoo --markdown`` prints the matrix; tests/spec_meta/test_zoo.py runs
one mutant per test and checks its row against the committed file.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from hypothesis import Phase, settings
from hypothesis import strategies as st

from spec.catalog import Claim, ordered
from spec.runner import FAILED, Invocation, Result, run_catalog
from spec.target import NotExposed, Target

# The zoo's profile: the ci profile (derandomized, 25 examples per claim) without the target and explain phases.
ZOO_PROFILE = "ci"
ZOO_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
DOC = "docs/kill-matrix.md"


def zoo_settings() -> settings:
    """The ci profile's settings (from spec.profiles) with the zoo's phases.

    ``report_multiple_bugs=False``: otherwise Hypothesis goes on generating for up to 10 s of wall time after the
    first failure, looking for other bugs, and shrinks from whichever failures it found by then; on a loaded
    machine that is fewer, and the shrunk size changed (DEC-4 on two mutants: 23 scalars alone, 26 in the full
    suite). Shrinking from the first failure alone depends on nothing but the claim.
    """
    from spec import profiles  # noqa: F401  (registers the profiles)

    return settings(settings.get_profile(ZOO_PROFILE), phases=ZOO_PHASES, report_multiple_bugs=False)


@dataclass
class Kill:
    """One claim that killed one mutant."""

    claim: str
    examples: int  # examples generated up to and including the first failing one
    size: int  # scalars drawn in the shrunk counterexample
    detail: str  # the first line of the failure


@dataclass
class ZooRun:
    """The catalog run against one mutant."""

    mutant: str
    results: list[Result]
    kills: list[Kill] = field(default_factory=list)

    @property
    def crashes(self) -> list[Result]:
        """Failures that are crashes of the mutant itself (no kill): TypeError, AttributeError, NameError."""
        return [r for r in self.results if r.status == FAILED and r.detail.startswith(BROKEN_MUTANT)]


BROKEN_MUTANT = ("TypeError", "AttributeError", "NameError")


# -- measuring a claim run ------------------------------------------------------------------------------
def scalars(value: object) -> int:
    """How many scalars a drawn value holds (tensor elements, numbers, items of lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, list | tuple):
        return sum(scalars(v) for v in value)
    if isinstance(value, str):
        return len(value)
    if value is None:
        return 0
    return 1


class _SizedData:
    """A Hypothesis data object that also adds up the scalars of what is drawn from it."""

    def __init__(self, data: st.DataObject) -> None:
        self._data = data
        self.size = 0

    def draw(self, strategy: st.SearchStrategy[Any], label: object = None) -> Any:
        value = self._data.draw(strategy, label=label)
        self.size += scalars(value)
        return value


@dataclass
class _Probe:
    calls: int = 0
    first_failure: int | None = None
    size: int | None = None


def _probed(claim: Claim, probe: _Probe) -> Claim:
    """The same claim, counting examples and measuring the failing one (the last failing call is the reported one)."""
    def check(target: Target, data: st.DataObject) -> None:
        probe.calls += 1
        sized = _SizedData(data)
        try:
            claim.check(target, cast(st.DataObject, sized))
        except NotExposed:
            raise
        except Exception:
            if probe.first_failure is None:
                probe.first_failure = probe.calls
            probe.size = sized.size
            raise

    check.__doc__ = claim.check.__doc__
    return replace(claim, check=check)


@contextmanager
def _seeded_global_rng(seed: int = 0) -> Iterator[None]:
    """Fix torch's global RNG for one mutant's run (dropout and the global-RNG sampler use it), then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def run_mutant(name: str, claims: list[Claim] | None = None, *, device: str = "cpu") -> ZooRun:
    """Every claim (the catalog by default) against mutant ``name``, under the zoo profile."""
    from spec.targets.mutants import build

    chosen = ordered() if claims is None else claims
    probes = {c.id: _Probe() for c in chosen}
    results: list[Result] = []
    target = build(name, device=device)
    # shrinking without the runner's time budget: a budget would cut it at a point that depends on the machine's load,
    # and the matrix records each shrunk size
    how = Invocation(target_spec=f"mutant:{name}", profile=ZOO_PROFILE, shrink_seconds=None)
    for c in chosen:  # one claim at a time, each from the same global RNG state: claims cannot affect each other
        with _seeded_global_rng():
            results += run_catalog([_probed(c, probes[c.id])], target, profile=zoo_settings(), invocation=how)
    run = ZooRun(name, results)
    for r in results:
        p = probes[r.claim]
        if r.status == FAILED and not r.detail.startswith(BROKEN_MUTANT):
            run.kills.append(Kill(r.claim, p.first_failure or r.examples, p.size or 0,
                                  r.detail.splitlines()[0] if r.detail else ""))
    return run


# -- the matrix -------------------------------------------------------------------------------------------
def row(name: str, kills: list[Kill]) -> str:
    """One line of the matrix: mutant, bug class, preset, and each killing claim as ID (examples/size)."""
    from spec.targets.mutants import MUTANTS

    m = MUTANTS[name]
    cells = ", ".join(f"{k.claim} ({k.examples}/{k.size})" for k in kills) or "**survived**"
    return f"| `{name}` | {m.bug_class} | {m.preset} | {len(kills)} | {cells} |"


def parse_row(line: str) -> tuple[str, list[tuple[str, int, int]]]:
    """(mutant, [(claim, examples, size), ...]) from a matrix line written by ``row``."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    name = cells[0].strip("`")
    kills = []
    for part in cells[4].split(", "):
        if part == "**survived**":
            continue
        claim, _, numbers = part.partition(" (")
        examples, size = numbers.rstrip(")").split("/")
        kills.append((claim, int(examples), int(size)))
    return name, kills


def summary(rows: dict[str, list[tuple[str, int, int]]]) -> str:
    """Kill count, the claims doing most of the killing, and examples-to-kill statistics, from the rows."""
    killed = [n for n, ks in rows.items() if ks]
    by_claim = Counter(c for ks in rows.values() for c, _, _ in ks)
    first = [min(e for _, e, _ in ks) for ks in rows.values() if ks]  # the fastest kill of each mutant
    every = [e for ks in rows.values() for _, e, _ in ks]
    top = ", ".join(f"{c} ({n})" for c, n in sorted(by_claim.items(), key=lambda cn: (-cn[1], cn[0]))[:8])
    only = sorted({ks[0][0] for ks in rows.values() if len(ks) == 1})
    lines = [
        f"- Killed: **{len(killed)} of {len(rows)}** mutants.",
        f"- Claims doing most of the killing (mutants killed): {top}.",
        f"- Mutants killed by a single claim: {sum(len(ks) == 1 for ks in rows.values())} "
        f"(by {', '.join(only) or 'none'}).",
        f"- Examples to the fastest kill per mutant: median {statistics.median(first):g}, worst {max(first)}.",
        f"- Examples to kill over all {len(every)} kills: median {statistics.median(every):g}, worst {max(every)}.",
    ]
    return "\n".join(lines) + "\n"


HEADER = """# Kill matrix of the mutant zoo

Generated by `next-token-spec zoo --markdown > docs/kill-matrix.md` (or `nox -s docs`);
tests/spec_meta/test_zoo.py fails when a row or the summary here is stale.

Each mutant (spec/targets/mutants.py, target `mutant:<name>`) is the reference with one
realistic bug. The whole catalog runs against it under the derandomized `ci` profile
(25 examples per claim, fewer for statistical claims), each kill shrunk; the global
torch RNG is seeded with 0 before each claim. A claim *kills* a mutant when it fails for a reason
other than a crash of the mutant itself (TypeError, AttributeError, NameError). The
same catalog runs against the built-in correct targets in CI (the pytest plugin) and
must pass there, so a kill is not a false alarm.

Each kill is written `CLAIM (examples/size)`:

- *examples*: how many examples Hypothesis generated for the claim up to and including
  the first failing one (1 = the very first example failed);
- *size*: the size of the counterexample Hypothesis shrank that failure to, counted as
  the scalars the claim drew in it (a drawn tensor counts its elements, a drawn number
  one, a list or tuple the sum of its items; hidden states the claim generates from a
  drawn seed are not counted, only the seed). `next-token-spec check mutant:<name>
  --claim ID` prints that counterexample.

"""

TABLE_HEAD = "| mutant | bug class | preset | kills | killed by: claim (examples/size) |\n|---|---|---|---|---|\n"


def markdown(runs: list[ZooRun]) -> str:
    """docs/kill-matrix.md for these runs (in the zoo's order)."""
    rows = {r.mutant: [(k.claim, k.examples, k.size) for k in r.kills] for r in runs}
    body = "".join(row(r.mutant, r.kills) + "\n" for r in runs)
    return HEADER + "## Summary\n\n" + summary(rows) + "\n## Matrix\n\n" + TABLE_HEAD + body


def read_doc(text: str) -> tuple[dict[str, str], str]:
    """(mutant -> its matrix line, the summary block) from the text of docs/kill-matrix.md."""
    lines = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            lines[parse_row(line)[0]] = line
    start = text.index("## Summary\n\n") + len("## Summary\n\n")
    return lines, text[start:text.index("\n## Matrix")]


def run_all(names: list[str] | None = None, *, device: str = "cpu") -> list[ZooRun]:
    """The zoo run, mutant by mutant (one torch thread, as in CI, so sums reduce in the same order)."""
    from spec.targets.mutants import MUTANTS

    torch.set_num_threads(1)
    return [run_mutant(n, device=device) for n in (names or list(MUTANTS))]


__all__ = ["DOC", "Kill", "ZooRun", "markdown", "run_all", "run_mutant"]
