"""The catalog: every claim of the documents, under its stable ID.

A claim is a property: a function of a target and a Hypothesis data object that
raises AssertionError when the target violates it. ``@claim`` registers it with its
one-line statement (in the project's own words), its sources (document key and
section), the capabilities it needs, and its tolerance with the reason for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from spec.target import CAPABILITIES, Target

Check = Callable[[Target, st.DataObject], None]

_ID = re.compile(r"^[A-Z]+-[0-9]+$")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str  # one line, the project's own words
    source: str  # document key and section, e.g. "embedding-to-choice §12"
    needs: tuple[str, ...]  # capabilities (spec.target.CAPABILITIES) beyond logits
    tolerance: str  # which comparison, and why that tolerance
    check: Check = field(compare=False)
    kind: str = "numeric"  # exact | numeric | statistical
    max_examples: int | None = None  # None: the profile's; statistical claims run fewer, larger examples
    precise: str = ""  # where the documents were loose: what the property makes precise
    alpha: float | None = None  # statistical claims: the stated chance that one run fails a correct target
    # executable documentation: the documents' mathematics shown on the target's numbers (or on none), not a check
    # of the target's own computation; held, it is reported "illustrated", never "passed" (spec.runner)
    illustration: str = ""  # why this claim cannot be a check of an implementation
    needs_any: tuple[str, ...] = ()  # capabilities of which the target must expose at least one (NORM-1: a norm)

    @property
    def family(self) -> str:
        return self.id.split("-")[0]

    @property
    def doc(self) -> str:
        return (self.check.__doc__ or "").strip()

    def missing(self, target: Target) -> list[str]:
        """The capabilities this claim needs that the target does not expose."""
        have = target.capabilities
        missing = [c for c in self.needs if c not in have]
        if self.needs_any and not set(self.needs_any) & have:
            missing.append(" or ".join(self.needs_any))
        return missing


CATALOG: dict[str, Claim] = {}

# Every claim the source documents make, by ID: the project's own list, which the registered catalog must match
# exactly (tests/spec_meta/test_framework.py). Add an ID here when a claim is added to the documents.
CLAIM_IDS: tuple[str, ...] = (
    "TOK-1", "TOK-2", "TOK-3", "TOK-4", "TOK-5",
    "EMB-1", "EMB-2", "EMB-3", "EMB-4", "EMB-5", "EMB-6", "EMB-7", "EMB-8",
    "POS-1", "POS-2", "POS-3",
    "ATT-1", "ATT-2", "ATT-3", "ATT-4", "ATT-5", "ATT-6",
    "MLP-1", "MLP-2", "RES-1", "NORM-1", "BLK-1",
    "OUT-1", "OUT-2", "OUT-3", "OUT-4", "OUT-5", "OUT-6", "OUT-7",
    "SOFT-1", "SOFT-2", "SOFT-3", "SOFT-4", "SOFT-5", "SOFT-6", "SOFT-7",
    "DEC-1", "DEC-2", "DEC-3", "DEC-4", "DEC-5",
    "GEN-1", "GEN-2", "GEN-3", "GEN-4",
    "REF-1",
    "TR-1", "TR-2", "TR-3", "TR-4", "TR-5", "TR-6", "TR-7",
)

FAMILY_ORDER = ("TOK", "EMB", "POS", "ATT", "MLP", "RES", "NORM", "BLK", "OUT", "SOFT", "DEC", "GEN", "REF", "TR")


def claim(id: str, statement: str, *, source: str, needs: tuple[str, ...] = (), tolerance: str,
          kind: str = "numeric", max_examples: int | None = None, precise: str = "",
          alpha: float | None = None, illustration: str = "",
          needs_any: tuple[str, ...] = ()) -> Callable[[Check], Check]:
    """Register the decorated property under ``id``."""
    if not _ID.match(id):
        raise ValueError(f"claim id {id!r} must look like 'ABC-1'")
    unknown = [c for c in (*needs, *needs_any) if c not in CAPABILITIES]
    if unknown:
        raise ValueError(f"claim {id} needs unknown capabilities {unknown}")
    if kind not in ("exact", "numeric", "statistical"):
        raise ValueError(f"claim {id}: kind must be exact, numeric or statistical, got {kind!r}")
    if (alpha is not None) != (kind == "statistical") or (alpha is not None and not 0.0 < alpha < 1.0):
        raise ValueError(f"claim {id}: a statistical claim states its per-run false-alarm rate alpha in (0, 1), "
                         f"and only a statistical claim has one; got kind {kind!r}, alpha {alpha!r}")

    def register(fn: Check) -> Check:
        if id in CATALOG:
            raise ValueError(f"claim {id} registered twice")
        CATALOG[id] = Claim(id, statement, source, tuple(needs), tolerance, fn, kind, max_examples, precise, alpha,
                            illustration, tuple(needs_any))
        return fn

    return register


def ordered() -> list[Claim]:
    """All registered claims, by family in pipeline order, then by number."""
    load_all()

    def key(c: Claim) -> tuple[int, int]:
        fam, num = c.id.split("-")
        return (FAMILY_ORDER.index(fam) if fam in FAMILY_ORDER else len(FAMILY_ORDER), int(num))

    return sorted(CATALOG.values(), key=key)


def load_all() -> None:
    """Import every claim module (registration happens at import)."""
    import spec.claims  # noqa: F401
