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

Every mutant also runs as an *opaque* target (spec.targets.opaque: no ``config``,
``reference_model`` or ``build``), the way a third-party implementation without a converter
is checked: the matrix's last column says which claims still kill it, or, for a mutant whose
bug those capabilities cannot show, the observation that is missing (``Mutant.missing``).

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
    """The catalog run against one mutant (as an opaque target where ``opaque``)."""

    mutant: str
    results: list[Result]
    kills: list[Kill] = field(default_factory=list)
    opaque: bool = False

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


def run_mutant(name: str, claims: list[Claim] | None = None, *, device: str = "cpu", opaque: bool = False,
               shrink: bool = True) -> ZooRun:
    """Every claim (the catalog by default) against mutant ``name``, under the zoo profile; as an opaque target (no
    config, reference_model or build) where ``opaque``. ``shrink=False`` stops at the first failure unshrunk (a
    kill's size is then that of the first failing example): for tests that only ask whether a claim kills."""
    from spec.targets.mutants import build
    from spec.targets.opaque import OpaqueTarget

    chosen = ordered() if claims is None else claims
    probes = {c.id: _Probe() for c in chosen}
    results: list[Result] = []
    target = build(name, device=device)
    spec = f"mutant:{name}"
    if opaque:
        spec = f"opaque:{spec}"
        target = OpaqueTarget(target, name=spec)
    # shrinking without the runner's time budget: a budget would cut it at a point that depends on the machine's load,
    # and the matrix records each shrunk size
    how = Invocation(target_spec=spec, profile=ZOO_PROFILE, shrink_seconds=None)
    profile = zoo_settings()
    if not shrink:
        profile = settings(profile, phases=tuple(p for p in ZOO_PHASES if p != Phase.shrink))
    for c in chosen:  # one claim at a time, each from the same global RNG state: claims cannot affect each other
        with _seeded_global_rng():
            results += run_catalog([_probed(c, probes[c.id])], target, profile=profile, invocation=how)
    run = ZooRun(name, results, opaque=opaque)
    for r in results:
        p = probes[r.claim]
        if r.status == FAILED and not r.detail.startswith(BROKEN_MUTANT):
            run.kills.append(Kill(r.claim, p.first_failure or r.examples, p.size or 0,
                                  r.detail.splitlines()[0] if r.detail else ""))
    return run


# -- the matrix -------------------------------------------------------------------------------------------
Row = tuple[str, list[tuple[str, int, int]], list[tuple[str, int, int]]]  # mutant, kills as-is, kills as opaque
NOT_KILLED = "not killed: needs "
SURVIVED = "**survived**"


def _cells(kills: list[Kill]) -> str:
    return ", ".join(f"{k.claim} ({k.examples}/{k.size})" for k in kills)


def _preset(name: str) -> str:
    from spec.targets.mutants import MUTANTS, HFMutant

    m = MUTANTS[name]
    return f"hf:{m.preset}" if isinstance(m, HFMutant) else m.preset


def row(name: str, kills: list[Kill], opaque: list[Kill]) -> str:
    """One line of the matrix: mutant, bug class, preset, each killing claim as ID (examples/size), and the same for
    the mutant as an opaque target, or the observation it lacks (``missing``) where nothing kills it there."""
    from spec.targets.mutants import MUTANTS

    m = MUTANTS[name]
    hidden = _cells(opaque) or (NOT_KILLED + m.missing if m.missing else SURVIVED)
    return f"| `{name}` | {m.bug_class} | {_preset(name)} | {len(kills)} | {_cells(kills) or SURVIVED} | {hidden} |"


def _parse_kills(cell: str) -> list[tuple[str, int, int]]:
    if cell == SURVIVED or cell.startswith(NOT_KILLED):
        return []
    kills = []
    for part in cell.split(", "):
        claim, _, numbers = part.partition(" (")
        examples, size = numbers.rstrip(")").split("/")
        kills.append((claim, int(examples), int(size)))
    return kills


def parse_row(line: str) -> Row:
    """(mutant, [(claim, examples, size), ...] as-is, the same as an opaque target) from a line written by ``row``."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return cells[0].strip("`"), _parse_kills(cells[4]), _parse_kills(cells[5])


def summary(rows: dict[str, list[tuple[str, int, int]]], opaque: dict[str, list[tuple[str, int, int]]]) -> str:
    """Kill counts as-is and as opaque targets, the claims doing most of the killing, examples-to-kill statistics,
    the mutants killed only by REF-1 and any observable mutant an opaque run let survive (a gap in the claims)."""
    from spec.targets.mutants import MUTANTS

    killed = [n for n, ks in rows.items() if ks]
    by_claim = Counter(c for ks in rows.values() for c, _, _ in ks)
    first = [min(e for _, e, _ in ks) for ks in rows.values() if ks]  # the fastest kill of each mutant
    every = [e for ks in rows.values() for _, e, _ in ks]
    top = ", ".join(f"{c} ({n})" for c, n in sorted(by_claim.items(), key=lambda cn: (-cn[1], cn[0]))[:8])
    only = sorted({ks[0][0] for ks in rows.values() if len(ks) == 1})
    observable = [n for n in opaque if not MUTANTS[n].missing]
    hidden_killed = [n for n, ks in opaque.items() if ks]
    by_hidden = Counter(c for ks in opaque.values() for c, _, _ in ks)
    top_hidden = ", ".join(f"{c} ({n})" for c, n in sorted(by_hidden.items(), key=lambda cn: (-cn[1], cn[0]))[:8])
    ref_only = [n for n, ks in rows.items() if ks and {c for c, _, _ in ks} == {"REF-1"}]
    gaps = [n for n in observable if not opaque[n]]
    wrong = [n for n, ks in opaque.items() if ks and MUTANTS[n].missing]
    lines = [
        f"- Killed: **{len(killed)} of {len(rows)}** mutants.",
        f"- Claims doing most of the killing (mutants killed): {top}.",
        f"- Mutants killed by a single claim: {sum(len(ks) == 1 for ks in rows.values())} "
        f"(by {', '.join(only) or 'none'}).",
        f"- Examples to the fastest kill per mutant: median {statistics.median(first):g}, worst {max(first)}.",
        f"- Examples to kill over all {len(every)} kills: median {statistics.median(every):g}, worst {max(every)}.",
        f"- Opaque (no config, reference_model, build): **{len(hidden_killed)} killed / {len(observable)} observable "
        f"/ {len(opaque)} total**; observable: the bug shows in what an opaque target still exposes (no missing "
        "observation recorded next to the mutant).",
        f"- Claims doing most of the killing as opaque targets: {top_hidden or 'none'}.",
        f"- Killed only by REF-1: {', '.join(ref_only) or 'none'} (the missing observation is in the last column).",
        f"- Observable but not killed as an opaque target (a gap in the claims): {', '.join(gaps) or 'none'}.",
    ]
    if wrong:
        lines.append(f"- Killed as opaque targets although a missing observation is recorded (the record is wrong): "
                     f"{', '.join(wrong)}.")
    return "\n".join(lines) + "\n"


HEADER = """# Kill matrix of the mutant zoo

Generated by `next-token-spec zoo --markdown > docs/kill-matrix.md` (or `nox -s docs`);
tests/spec_meta/test_zoo.py fails when a row or the summary here is stale.

Each mutant (spec/targets/mutants.py, target `mutant:<name>`) is the reference with one
realistic bug, or, for `hf-...` (spec/targets/hf_mutants.py), a tiny HuggingFace model with
the bug put in through transformers' public extension points (an attention function
registered with `AttentionInterface`, forward hooks). The whole catalog runs against it
under the derandomized `ci` profile (25 examples per claim, fewer for statistical claims),
each kill shrunk; the global torch RNG is seeded with 0 before each claim. A claim *kills* a
mutant when it fails for a reason other than a crash of the mutant itself (TypeError,
AttributeError, NameError). The same catalog runs against the built-in correct targets in
CI (the pytest plugin) and must pass there, so a kill is not a false alarm.

Each kill is written `CLAIM (examples/size)`:

- *examples*: how many examples Hypothesis generated for the claim up to and including
  the first failing one (1 = the very first example failed);
- *size*: the size of the counterexample Hypothesis shrank that failure to, counted as
  the scalars the claim drew in it (a drawn tensor counts its elements, a drawn number
  one, a list or tuple the sum of its items; hidden states the claim generates from a
  drawn seed are not counted, only the seed). `next-token-spec check mutant:<name>
  --claim ID` prints that counterexample.

The last column runs the same catalog against the mutant as an *opaque* target
(`opaque:mutant:<name>`, spec/targets/opaque.py): everything delegated but `config`,
`reference_model` and `build`, as a third-party implementation without a converter is
checked. There REF-1 and the claims that build or read the configuration cannot run. A
mutant whose bug the remaining capabilities cannot show says which observation is missing
(`missing` next to the mutant's definition); every other mutant must be killed there, by
claims other than REF-1.

"""

TABLE_HEAD = ("| mutant | bug class | preset | kills | killed by: claim (examples/size) | opaque (no config, "
              "reference_model, build): killed by |\n|---|---|---|---|---|---|\n")


def markdown(runs: list[ZooRun], opaque: list[ZooRun]) -> str:
    """docs/kill-matrix.md for these runs (in the zoo's order), each mutant as it is and as an opaque target."""
    hidden = {r.mutant: r.kills for r in opaque}
    rows = {r.mutant: [(k.claim, k.examples, k.size) for k in r.kills] for r in runs}
    hidden_rows = {r.mutant: [(k.claim, k.examples, k.size) for k in hidden[r.mutant]] for r in runs}
    body = "".join(row(r.mutant, r.kills, hidden[r.mutant]) + "\n" for r in runs)
    return HEADER + "## Summary\n\n" + summary(rows, hidden_rows) + "\n## Matrix\n\n" + TABLE_HEAD + body


def read_doc(text: str) -> tuple[dict[str, str], str]:
    """(mutant -> its matrix line, the summary block) from the text of docs/kill-matrix.md."""
    lines = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            lines[parse_row(line)[0]] = line
    start = text.index("## Summary\n\n") + len("## Summary\n\n")
    return lines, text[start:text.index("\n## Matrix")]


def run_both(name: str, device: str = "cpu") -> tuple[ZooRun, ZooRun]:
    """Mutant ``name`` as it is and as an opaque target, on one torch thread (as in CI, so sums reduce in the same
    order and the matrix repeats)."""
    torch.set_num_threads(1)
    return run_mutant(name, device=device), run_mutant(name, device=device, opaque=True)


def run_all(names: list[str] | None = None, *, device: str = "cpu") -> tuple[list[ZooRun], list[ZooRun]]:
    """The zoo run, mutant by mutant, as it is and as an opaque target."""
    from spec.targets.mutants import MUTANTS

    pairs = [run_both(n, device) for n in (names or list(MUTANTS))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


__all__ = ["DOC", "Kill", "ZooRun", "markdown", "parse_row", "row", "run_all", "run_both", "run_mutant", "summary"]
