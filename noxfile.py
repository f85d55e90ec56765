"""nox sessions: tests, lint, typecheck, coverage, cuda, peers, docs, soak.

Sessions run in the current environment (venv_backend "none"): install the project
once as the README says, then `nox -s tests lint typecheck`. Creating a fresh venv per
session would download torch again each time (several GB unless pinned to the CPU
build), which is exactly what the README's install step avoids.
"""

from __future__ import annotations

import os
import platform

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests", "lint", "typecheck"]

COVERAGE_FLOOR = 90  # percent of reference/ lines; also [tool.coverage.report] fail_under


@nox.session
def tests(session: nox.Session) -> None:
    """The project's tests and the whole catalog against every built-in target."""
    session.run("python", "-m", "pytest", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "reference", "spec")


@nox.session
def coverage(session: nox.Session) -> None:
    """Unit tests of reference/ with line coverage; fails below the floor."""
    session.run("python", "-m", "pytest", "tests/reference", "--cov=reference", "--cov-report=term-missing",
                f"--cov-fail-under={COVERAGE_FLOOR}", "-p", "no:randomly", *session.posargs)


@nox.session
def cuda(session: nox.Session) -> None:
    """The CUDA-marked tests and the catalog on the GPU. Without CUDA it says so and runs the CUDA-marked tests
    without ``--device cuda`` (which pytest refuses there), so each shows its skip reason and the session still
    checks that they collect."""
    import torch

    if torch.cuda.is_available():
        session.run("python", "-m", "pytest", "-m", "cuda", "--device", "cuda", "-rs", *session.posargs)
    else:
        session.warn("CUDA is not available: the CUDA-marked tests are skipped (reasons below); no claim runs on a GPU")
        session.run("python", "-m", "pytest", "-m", "cuda", "-rs", *session.posargs)
    session.run("python", "-m", "pytest", "tests/reference", "--device", "all", "-q", *session.posargs)


@nox.session
def peers(session: nox.Session) -> None:
    """Third-party peers (TransformerLens 3.x, llama.cpp, ONNX Runtime) against the catalog; writes
    docs/conformance.md."""
    # llama-cpp-python compiles llama.cpp here; its multimodal library (mtmd, "llava") is not needed for text
    # and is a quarter of the build: 429 s instead of 567 s on 2 cores. A user's own CMAKE_ARGS are kept, after ours.
    # On x86-64, AVX2 code instead of -march=native: a native build on a CPU with AMX (Sapphire Rapids) died in its
    # first decode here (SIGILL, then SIGSEGV after a rebuild: a sandbox that does not grant AMX's tile state), and a
    # native wheel in pip's cache is wrong for the next machine. The AVX2 build ran the catalog on the same machine.
    ours = "-DLLAVA_BUILD=OFF"
    if platform.machine().lower() in ("x86_64", "amd64"):
        ours += " -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    cmake_args = f"{ours} {os.environ.get('CMAKE_ARGS', '')}".strip()
    session.run("python", "-m", "pip", "install", "--quiet", "-e", ".[peers]", env={"CMAKE_ARGS": cmake_args})
    # the peers' own tests, which the main run skips without the extra: here a missing package fails them
    session.run("python", "-m", "pytest", "tests/spec_meta/test_onnx_runtime.py", "-q",
                env={"NEXT_TOKEN_SPEC_REQUIRE_PEERS": "1", "OMP_NUM_THREADS": "2"})
    session.run("python", "-m", "spec.conformance", "--out", "docs/conformance.md", *session.posargs,
                env={"OMP_NUM_THREADS": "2"})


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/claims.md from the catalog, docs/kill-matrix.md from the mutant zoo (~10 min on 1 core) and
    the pictures in docs/figures/."""
    with open("docs/claims.md", "w", encoding="utf-8") as out:
        session.run("next-token-spec", "list", "--markdown", stdout=out)
    with open("docs/kill-matrix.md", "w", encoding="utf-8") as out:
        session.run("next-token-spec", "zoo", "--markdown", stdout=out)
    session.run("next-token-spec", "figures", "docs/figures")  # docs/figures.md's pictures (~1 min, SmolLM2)


@nox.session
def soak(session: nox.Session) -> None:
    """The catalog N times with fresh random seeds on the targets given, failures counted per claim (spec.soak);
    not part of CI. E.g. ``nox -s soak -- --runs 50 --jobs 2 reference:llama-tiny hf:llama --out soak.md``."""
    args = session.posargs or ["--runs", "10", "reference:llama-tiny"]
    session.run("python", "-m", "spec.soak", *args, env={"OMP_NUM_THREADS": "1"})
