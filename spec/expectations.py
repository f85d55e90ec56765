"""Known deviations: a per-target file listing claims expected to fail, with a reason.

Format (TOML), e.g. ``expectations/hf-gpt2.toml``::

    [[deviation]]
    claim = "GEN-3"
    reason = "GPT-2 forward ignores left padding unless position_ids are passed"

An entry whose claim ID is not in the catalog, or that names a claim that then
passes, is reported as a warning: stale expectations hide nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import tomllib


@dataclass(frozen=True)
class Deviation:
    claim: str
    reason: str


def load(path: str | Path, known_ids: set[str]) -> dict[str, Deviation]:
    """Read an expectations file; warn about entries that match no claim."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    out: dict[str, Deviation] = {}
    for entry in data.get("deviation", []):
        cid, reason = str(entry.get("claim", "")), str(entry.get("reason", "")).strip()
        if not reason:
            raise ValueError(f"{path}: deviation for {cid!r} needs a reason")
        if cid not in known_ids:
            warnings.warn(f"{path}: expected deviation {cid!r} matches no claim in the catalog", stacklevel=2)
            continue
        out[cid] = Deviation(cid, reason)
    return out
