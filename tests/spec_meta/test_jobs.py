"""Issue #13: ``check -j N`` runs the claims in N worker processes, each loading the target once.

The results are those of one process (statuses, examples, counterexamples, reproducers; the worst error to the
last few bits, which hang on memory alignment in any process), the claim lines stream as claims finish, the table
is in catalog order, a bad N is refused before any work, a factory target imports in the workers, a worker that
dies fails its claim and the rest still run, and Ctrl-C ends the workers and keeps what finished.

Each pool run starts fresh interpreters (import torch, hypothesis, the catalog): a few seconds each, so the tests
use few runs and cheap claims.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from spec import pool
from spec.catalog import CATALOG, ordered
from spec.cli import Stream, main
from spec.pool import MAX_JOBS, Setup, run_pool, threads_per_worker
from spec.runner import FAILED, PASSED, Invocation, Result
from spec.targets import registry

CLAIM_LINE = re.compile(r"^(\S+)\s+(passed|failed|partly run|illustrated)\s+(\d+) examples\s+[\d.]+ s")
FAST = ["TOK-3", "TOK-4", "EMB-5", "POS-2", "DEC-2"]  # well under a second each on gpt2-tiny

FACTORIES = '''
import os
import signal

from spec.targets.reference_target import ReferenceTarget
from spec.targets.registry import resolve


def off_by_one():
    """A factory target with a bug: the zoo's embedding lookup off by one."""
    return resolve("mutant:embedding-off-by-one")


def dies_in_logits():
    """Tokenizer claims pass; the first call of logits kills the process running it."""
    target = ReferenceTarget.from_preset("gpt2-tiny")

    def logits(ids, attention_mask=None):
        os.kill(os.getpid(), signal.SIGKILL)

    target.logits = logits
    return target
'''


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cores, so -j 2 gives each worker one torch thread, as the in-process run has here (conftest)."""
    monkeypatch.setattr(pool, "available_cores", lambda: 2)


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of factory targets on a sys.path entry that only this process has (the workers get it passed)."""
    (tmp_path / "jobs_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "jobs_factories"


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _report(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()))


def _same(one: list[dict[str, Any]], many: list[dict[str, Any]]) -> None:
    """Every field of every result alike but the seconds; the worst error / tolerance to 1e-6 relative."""
    assert [r["claim"] for r in one] == [r["claim"] for r in many]
    for a, b in zip(one, many, strict=True):
        assert b["worst"] == pytest.approx(a["worst"], rel=1e-6), a["claim"]
        for r in (a, b):
            r.pop("seconds")
            r.pop("worst")
        assert a == b


def test_two_workers_give_one_process_results_streamed_as_they_finish(two_cores: None, tmp_path: Path) -> None:
    base = ["check", "reference:gpt2-tiny", "--profile", "ci", *[w for c in FAST for w in ("--claim", c)]]
    code1, _, _ = run([*base, "-j", "1", "--quiet", "--report", str(tmp_path / "one.json")])
    code2, out, err = run([*base, "-j", "2", "--report", str(tmp_path / "two.json")])
    assert code1 == code2 == 0, err
    _same(_report(tmp_path / "one.json"), _report(tmp_path / "two.json"))
    assert out.splitlines()[0].endswith("in 2 worker processes (1 torch thread each)"), out
    head, table = out.split("\nclaim ", 1)
    streamed = [m[1] for line in head.splitlines() if (m := CLAIM_LINE.match(line))]
    assert sorted(streamed) == sorted(FAST), out  # one line per claim, in the order they finished
    in_table = [line.split()[0] for line in table.splitlines()[2:] if line.split() and line.split()[0] in FAST]
    assert in_table == [c.id for c in ordered() if c.id in FAST], out  # the table in catalog order
    assert "5 passed" in out


def test_a_failure_in_a_worker_comes_back_whole_from_a_factory_target(two_cores: None, factories: str,
                                                                      tmp_path: Path) -> None:
    """A factory module found through this process's sys.path; the counterexample, shrunk fully (no clock in it),
    and the reproducer are those of one process."""
    base = ["check", f"{factories}:off_by_one", "--profile", "ci", "--claim", "EMB-1", "--claim", "EMB-5",
            "--shrink-seconds", "inf", "--quiet"]
    code1, out1, _ = run([*base, "-j", "1", "--report", str(tmp_path / "one.json")])
    code2, out2, err = run([*base, "-j", "2", "--report", str(tmp_path / "two.json")])
    assert code1 == code2 == 1, err
    one, two = _report(tmp_path / "one.json"), _report(tmp_path / "two.json")
    _same(one, two)
    failed = two[0]
    assert failed["claim"] == "EMB-1" and failed["status"] == FAILED and failed["shrink"] == "shrunk"
    assert "ids" in failed["counterexample"] and failed["draws"], failed
    assert failed["reproduce"].startswith(f"next-token-spec check {factories}:off_by_one --claim EMB-1 ")
    assert two[1]["status"] == PASSED
    assert out1 == out2  # the table, the summary and the failure's story, word for word


@pytest.mark.parametrize("jobs", ["0", "-1", str(MAX_JOBS + 1), "two", "1.5", ""])
def test_a_bad_number_of_jobs_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch, jobs: str) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a target was built")

    monkeypatch.setattr(registry, "resolve", refuse)
    code, out, err = run(["check", "reference", "-j", jobs])
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "-j/--jobs" in err and f"from 1 to {MAX_JOBS}" in err


def test_threads_are_the_cores_shared_out() -> None:
    assert [threads_per_worker(n, cores=8) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def _setup(spec: str) -> Setup:
    return Setup(spec, "cpu", "float32", "ci", Invocation(target_spec=spec, profile="ci", device="cpu",
                                                          dtype="float32"), 1, tuple(sys.path))


def test_a_worker_that_dies_fails_its_claim_and_a_fresh_one_runs_the_rest(factories: str) -> None:
    claims = [CATALOG["OUT-7"], CATALOG["TOK-3"]]  # OUT-7 calls logits; TOK-3 needs only the tokenizer
    results = run_pool(claims, _setup(f"{factories}:dies_in_logits"), 1)
    assert [(r.claim, r.status) for r in results] == [("OUT-7", FAILED), ("TOK-3", PASSED)]
    assert "worker process running this claim died (killed by signal SIGKILL)" in results[0].detail
    assert results[0].reproduce.startswith(f"next-token-spec check {factories}:dies_in_logits --claim OUT-7 ")
    assert not multiprocessing.active_children()


def test_ctrl_c_ends_the_workers_and_keeps_what_finished(two_cores: None, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    seen: list[str] = []
    done = Stream.done

    def interrupted_after_two(self: Stream, r: Result) -> None:
        done(self, r)
        seen.append(r.claim)
        if len(seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Stream, "done", interrupted_after_two)
    out = tmp_path / "r.json"
    claims = [w for c in FAST for w in ("--claim", c)]
    code, stdout, stderr = run(["check", "reference:gpt2-tiny", "--profile", "ci", *claims, "-j", "2",
                                "--report", str(out)])
    assert code == 130
    assert not multiprocessing.active_children()
    assert sorted(r["claim"] for r in _report(out)) == sorted(seen)
    assert "2 passed" in stdout and "interrupted: 2 of 5 claims finished" in stderr


def test_the_default_runs_a_big_model_in_one_process() -> None:
    """Without -j, a target whose weights pass the limit runs in one process (each worker would copy them); a small
    one gets a worker per core, never more than there are claims. The weights are counted once per storage (a tied
    head is not counted twice)."""
    small = SimpleNamespace(model=torch.nn.Linear(4, 4))
    big = SimpleNamespace(model=torch.nn.Embedding(pool.SHARED_WEIGHTS_LIMIT // 4 // 64 + 1, 64))
    assert pool.weights_bytes(small) == (16 + 4) * 4
    assert pool.weights_bytes(big) > pool.SHARED_WEIGHTS_LIMIT
    tied = torch.nn.Linear(8, 8, bias=False)
    both = SimpleNamespace(a=tied, b=torch.nn.Sequential(tied))
    assert pool.weights_bytes(both) == 8 * 8 * 4
    assert pool.weights_bytes(SimpleNamespace(runtime="not a module")) == 0
    assert [pool.default_jobs(small, n, cores=4) for n in (1, 3, 58)] == [1, 3, 4]
    assert pool.default_jobs(big, 58, cores=4) == 1


def _workers_per_target(tmp_path: Path, targets: list[str]) -> dict[str, set[str]]:
    """Run cheap claims under ``pytest -n 2`` and say which xdist workers ran each target's claim items."""
    import subprocess

    cmd = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-n", "2", "-v",
           "--hypothesis-profile", "ci", *(f"--target={t}" for t in targets),
           "-k", " or ".join(f"{c}]" for c in FAST)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen: dict[str, set[str]] = {}
    for worker, target in re.findall(r"\[(gw\d+)\][^\n]*? PASSED[^\n]*?::claim\[([^|\]]+)\|", proc.stdout):
        seen.setdefault(target, set()).add(worker)
    assert sum(1 for _ in re.finditer(r"PASSED", proc.stdout)) == len(FAST) * len(targets), proc.stdout
    return seen


def test_under_xdist_each_target_is_loaded_by_one_worker(tmp_path: Path) -> None:
    """With as many targets as workers, each target's claim items all run on one worker (one load of it per run);
    with one target, its claims are shared out over both workers."""
    two = _workers_per_target(tmp_path, ["reference:gpt2-tiny", "reference:llama-tiny"])
    assert set(two) == {"reference:gpt2-tiny", "reference:llama-tiny"}
    assert all(len(w) == 1 for w in two.values()), two
    one = _workers_per_target(tmp_path, ["reference:gpt2-tiny"])
    assert one == {"reference:gpt2-tiny": {"gw0", "gw1"}}, one
