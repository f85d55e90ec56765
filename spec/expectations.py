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

Reading is defensive (issue #14): only a regular file of at most MAX_BYTES is read (a FIFO, a device or a
folder is refused without blocking), malformed TOML and entries of the wrong type are reported as InputError
naming the file (and the line, as tomllib gives it), and an include must stay inside the including file's
folder: a relative path, no ``..``, no link leading out.
"""

from __future__ import annotations

import os
import stat
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

from spec.errors import InputError

BUILTIN = Path(__file__).resolve().parent / "targets" / "expectations"  # the built-in targets' deviations
MAX_BYTES = 1 << 20  # an expectations file larger than this is refused (they are a few KB)


class MissingExpectations(InputError, FileNotFoundError):
    """An expectations path that does not exist (a typo must not silently drop every expectation)."""


@dataclass(frozen=True)
class Deviation:
    claim: str
    reason: str


def entries(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[dict[str, object]]:
    """The [[deviation]] tables of a file, its included files' first, in order."""
    p = Path(path).resolve()
    if p in _seen:
        raise InputError(f"{path}: include cycle through {', '.join(s.name for s in _seen)}")
    data = _parse(path)
    include = data.get("include", [])
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise InputError(f"{path}: include must be a list of file names, got {include!r}")
    found: list[dict[str, object]] = []
    for name in include:
        found += entries(_included(path, p, name), (*_seen, p))
    return found + _deviation_tables(path, data)


def _read(path: str | Path) -> str:
    """The text of a regular file of at most MAX_BYTES; InputError for anything else (never blocks on a FIFO)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingExpectations(f"expectations: {path} does not exist; give a TOML file or a folder of "
                                  "<target>.toml") from None
    except OSError as err:
        raise InputError(f"expectations: cannot read {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"expectations: {path} is not a regular file; give a TOML file or a folder of "
                         "<target>.toml")
    if info.st_size > MAX_BYTES:
        raise InputError(f"expectations: {path} is {info.st_size} bytes; an expectations file is at most "
                         f"{MAX_BYTES} bytes")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise InputError(f"expectations: cannot read {path}: {err.strerror}") from None
    if len(raw) > MAX_BYTES:  # it grew after the check
        raise InputError(f"expectations: {path} is larger than {MAX_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"expectations: {path} is not UTF-8 text (byte {err.start})") from None


def _parse(path: str | Path) -> dict[str, object]:
    text = _read(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # its message ends "(at line L, column C)"
        raise InputError(f"expectations: {path} is not valid TOML: {err}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively: a[[[[... exhausts the stack
        raise InputError(f"expectations: {path} nests arrays or tables too deeply to read (an expectations file "
                         "needs two levels)") from None


def _included(including: str | Path, resolved: Path, name: str) -> Path:
    """The file an include names: relative to the including file, inside its folder tree, existing."""
    rel = Path(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise InputError(f"{including}: include {name!r} must be a path relative to the including file's folder, "
                         "without '..'")
    folder = resolved.parent
    target = folder / rel
    if not target.resolve().is_relative_to(folder):
        raise InputError(f"{including}: include {name!r} leads outside {folder} (through a symbolic link)")
    if not target.exists():
        raise InputError(f"{including}: include {name!r}: {target} does not exist")
    return target


def _deviation_tables(path: str | Path, data: dict[str, object]) -> list[dict[str, object]]:
    """``deviation``: a list of tables, each with a string ``claim`` and ``reason``; InputError naming what is not."""
    tables = data.get("deviation", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"{path}: deviation must be a list of tables ([[deviation]]), got {type(tables).__name__}")
    for t in tables:
        for key in ("claim", "reason"):
            if not isinstance(t.get(key, ""), str):
                raise InputError(f"{path}: a deviation's {key} must be a string, got {t[key]!r}")
    return tables


def load(path: str | Path, known_ids: set[str]) -> dict[str, Deviation]:
    """Read an expectations file (with its includes); warn about entries that match no claim.

    ``known_ids`` empty means the catalog was not loaded yet (spec.catalog.load_all): every entry would
    be dropped and each listed deviation would turn into a failure, so that is an error.
    """
    if not known_ids:
        raise InputError("expectations: no claim IDs to check the entries against; load the catalog first "
                         "(spec.catalog.load_all)")
    out: dict[str, Deviation] = {}
    for entry in entries(path):
        cid, reason = str(entry.get("claim", "")), str(entry.get("reason", "")).strip()
        if not reason:
            raise InputError(f"{path}: deviation for {cid!r} needs a reason")
        if cid not in known_ids:
            warnings.warn(f"{path}: expected deviation {cid!r} matches no claim in the catalog", stacklevel=2)
            continue
        if cid in out:
            raise InputError(f"{path}: {cid} is listed twice (directly or through include)")
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
    if not _exists(p):
        raise MissingExpectations(f"expectations: {p} does not exist; give a TOML file or a folder of <target>.toml")
    if p.is_dir():
        p = p / file_name(target_spec)
        if not _exists(p):
            return {}
    return load(p, known_ids)


def _exists(p: Path) -> bool:
    """Whether ``p`` exists; InputError for a path the system cannot even look up (a NUL byte, too long)."""
    try:
        os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError) as err:
        raise InputError(f"expectations: cannot look up {str(p)!r}: {err}") from None
    return True
