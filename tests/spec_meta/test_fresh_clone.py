"""A fresh clone of the project, alone in a folder, passes the catalog's tests and reads nothing beside itself.

CI's checkout has the steering material in a folder beside it; a user's clone never does. So the project
(code, tests, nox, CI) must not read outside its own tree (issue #11). This test copies the repository's files
(tracked and untracked-but-not-ignored: what a clone of the working tree holds) into an empty temporary folder,
runs the catalog's own tests and a catalog run on a built-in target there under an audit hook, and fails if any
file or folder beside the copy was opened or listed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs pytest inside the copy with an audit hook that records every open/listdir/scandir of a path that lies
# beside the copy (inside its parent folder, outside the copy itself), such as a sibling folder of documents.
AUDITED_PYTEST = r"""
import os, sys
repo = os.path.realpath(os.getcwd())
beside = os.path.dirname(repo)
reads = []

def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.path.abspath(os.fsdecode(args[0])))
        if path.startswith(beside + os.sep) and not (path == repo or path.startswith(repo + os.sep)):
            reads.append(f"{event} {path}")

sys.addaudithook(hook)
import pytest
code = pytest.main(sys.argv[1:])
if reads:
    print("READ BESIDE THE REPOSITORY:", *sorted(set(reads)), sep="\n  ")
    sys.exit(3)
sys.exit(code)
"""


def _project_files() -> list[str]:
    done = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                          capture_output=True, check=True)
    return [f for f in done.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


def test_a_clone_alone_in_a_folder_passes_the_catalog_tests_and_reads_nothing_beside_it(tmp_path: Path) -> None:
    clone = tmp_path / "alone" / "next-token-spec"
    for name in _project_files():
        dest = clone / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["next-token-spec"]  # nothing beside the clone
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NEXT_TOKEN_SPEC_TARGET"))}
    env |= {"PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    args = ["-p", "no:cacheprovider", "-p", "no:xdist", "-q", "--hypothesis-profile", "ci",
            "tests/spec_meta/test_framework.py", "--target", "reference:llama-tiny"]
    done = subprocess.run([sys.executable, "-c", AUDITED_PYTEST, *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    out = done.stdout[-6000:] + done.stderr[-3000:]
    assert "READ BESIDE THE REPOSITORY" not in out, out
    assert done.returncode == 0, out
    assert " passed" in out and " failed" not in out, out
    where = "import spec, reference; print(spec.__file__, reference.__file__)"
    imported = subprocess.run([sys.executable, "-c", where], cwd=clone, env=env, capture_output=True, text=True,
                              check=True).stdout.split()
    assert all(Path(p).resolve().is_relative_to(clone.resolve()) for p in imported), imported
