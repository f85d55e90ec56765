"""Known deviations: a per-target file listing claims expected to fail, with a reason.

Format (TOML), e.g. ``expectations/hf-gpt2.toml``::

    [[deviation]]
    claim = "GEN-3"
    reason = "GPT-2 forward ignores left padding unless position_ids are passed"

A file may also name shared files whose entries it adopts, relative to itself, e.g.
``smollm2-hf.toml`` has ``include = ["_smollm2-hf-tokenizer.toml"]`` for the deviations of
transformers' SmolLM2 tokenizer, which ``tlens:smollm2`` shares; files whose names start with
``_`` belong to no target.

An entry whose claim ID is not in the catalog is reported as a warning; one that names
a claim that then passes is a failure (spec.runner): stale expectations hide nothing.

The built-in targets' files ship with the package in ``spec/targets/expectations/``
(:data:`BUILTIN`): ``next-token-spec check``, ``python -m spec.conformance`` and the pytest plugin all
read them by default, so a built-in target gets the same verdict from each. ``--expectations PATH``
overrides them (and for pytest so does the ini option ``next_token_spec_expectations``);
``--no-expectations`` turns them off.
"""

from __future__ import annotations

import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

BUILTIN = Path(__file__).resolve().parent / "targets" / "expectations"  # the built-in targets' deviations


@dataclass(frozen=True)
class Deviation:
    claim: str
    reason: str


def entries(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[dict[str, object]]:
    """The [[deviation]] tables of a file, its included files' first, in order."""
    p = Path(path).resolve()
    if p in _seen:
        raise ValueError(f"{path}: include cycle through {', '.join(s.name for s in _seen)}")
    data = tomllib.loads(p.read_text(encoding="utf-8"))
    include = data.get("include", [])
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise ValueError(f"{path}: include must be a list of file names, got {include!r}")
    found: list[dict[str, object]] = []
    for name in include:
        found += entries(p.parent / name, (*_seen, p))
    return found + list(data.get("deviation", []))


def load(path: str | Path, known_ids: set[str]) -> dict[str, Deviation]:
    """Read an expectations file (with its includes); warn about entries that match no claim.

    ``known_ids`` empty means the catalog was not loaded yet (spec.catalog.load_all): every entry would
    be dropped and each listed deviation would turn into a failure, so that is an error.
    """
    if not known_ids:
        raise ValueError("expectations: no claim IDs to check the entries against; load the catalog first "
                         "(spec.catalog.load_all)")
    out: dict[str, Deviation] = {}
    for entry in entries(path):
        cid, reason = str(entry.get("claim", "")), str(entry.get("reason", "")).strip()
        if not reason:
            raise ValueError(f"{path}: deviation for {cid!r} needs a reason")
        if cid not in known_ids:
            warnings.warn(f"{path}: expected deviation {cid!r} matches no claim in the catalog", stacklevel=2)
            continue
        if cid in out:
            raise ValueError(f"{path}: {cid} is listed twice (directly or through include)")
        out[cid] = Deviation(cid, reason)
    return out


def file_name(target_spec: str) -> str:
    """The expectations file of a target spec: ':' and '/' become '-', plus '.toml' (``hf:gpt2`` -> hf-gpt2.toml)."""
    return target_spec.replace(":", "-").replace("/", "-") + ".toml"


def for_target(path: str | Path, target_spec: str, known_ids: set[str]) -> dict[str, Deviation]:
    """The deviations listed for ``target_spec``: ``path`` is its file, or a folder holding ``file_name(spec)``.

    A folder without a file for the target means none are expected; a path that does not
    exist is an error (a typo must not silently drop every expectation).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"expectations: {p} does not exist; give a TOML file or a folder of <target>.toml")
    if p.is_dir():
        p = p / file_name(target_spec)
        if not p.exists():
            return {}
    return load(p, known_ids)
