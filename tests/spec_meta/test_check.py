"""Issue #15, seams: ``next-token-spec check``, ``python -m spec.conformance`` and the pytest plugin check a target
through one path (spec.check.Check), so they give the same verdicts: the same status and number of examples for
every claim, the same expected deviations applied from the same folder, the same reproducer of a failure.

The target is a mutant with an expectations folder of its own: ATT-2 fails and is listed (an expected deviation),
EMB-5 holds and is listed (a stale entry: a failure), REF-1 fails unlisted, TOK-3 holds, TR-1 needs trained weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import settings

from spec import conformance
from spec.check import Check
from spec.cli import main
from spec.runner import DEVIATION, FAILED, PASSED

pytest_plugins = ["pytester"]

TARGET = "mutant:attn-scale-none"
CLAIMS = ("TOK-3", "EMB-5", "ATT-2", "REF-1", "TR-1")
LISTED = '''[[deviation]]
claim = "ATT-2"
reason = "the mutant's own bug: scores are not scaled"

[[deviation]]
claim = "EMB-5"
reason = "a stale entry: EMB-5 holds on this mutant"
'''
OPTIONS = ("--shrink-seconds", "0")  # a counterexample as first found: the same in every run, and quick

Verdicts = dict[str, tuple[str, int]]
Run = tuple[int, Verdicts, set[str]]  # the exit status, each claim's status and examples, the failures' reproducers


def _folder(root: Path) -> Path:
    d = root / "expected"
    d.mkdir()
    (d / "mutant-attn-scale-none.toml").write_text(LISTED, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    """The expectations folder, ``check``'s run and conformance's. Module-scoped, so set up before pytester takes
    its snapshot of sys.modules: the modules these runs import (numpy's among them, which cannot be imported twice
    in a process) are not dropped after the plugin's in-process run."""
    root = tmp_path_factory.mktemp("check")
    folder = _folder(root)
    return folder, _cli(folder, root), _conformance(folder, root)


def _cli(folder: Path, root: Path) -> Run:
    out = root / "cli.json"
    argv = ["check", TARGET, *[w for c in CLAIMS for w in ("--claim", c)], "--profile", "ci", "--expectations",
            str(folder), *OPTIONS, "-j", "1", "--quiet", "--report", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    rows = json.loads(out.read_text(encoding="utf-8"))
    return code, {r["claim"]: (r["status"], r["examples"]) for r in rows}, {r["reproduce"] for r in rows
                                                                            if r["status"] == FAILED}


def _conformance(folder: Path, root: Path) -> Run:
    out, printed = root / "conformance.md", io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = conformance.main([TARGET, "--out", str(out), "--profile", "ci", "--expectations", str(folder),
                                 *OPTIONS, *[w for c in CLAIMS for w in ("--claim", c)]])
    verdicts = {}
    for line in printed.getvalue().splitlines():  # "  ID       status               N examples  S s"
        if m := re.match(r"  (\S+) +(.+?) +(\d+) examples ", line):
            verdicts[m[1]] = (m[2], int(m[3]))
    return code, verdicts, set(re.findall(r"^reproduce: (.*)$", out.read_text(encoding="utf-8"), re.M))


def _plugin(folder: Path, pytester: pytest.Pytester) -> Run:
    before = settings._current_profile
    try:
        rec = pytester.inline_run("--target", TARGET, "--expectations", str(folder), "--hypothesis-profile", "ci",
                                  *OPTIONS, "-k", " or ".join(CLAIMS), "-p", "no:randomly", "-p", "no:cacheprovider")
    finally:
        settings.load_profile(str(before))  # the inner run loaded its profile in this process
    verdicts, reproducers = {}, set()
    for report in rec.getreports("pytest_runtest_logreport"):
        props = dict(report.user_properties)
        if report.when == "call" and "status" in props:
            verdicts[report.nodeid.rsplit("|", 1)[1].rstrip("]")] = (props["status"], props["examples"])
            if props["status"] == FAILED:
                reproducers |= set(re.findall(r"^reproduce: (.*)$", str(report.longrepr), re.M))
    return int(rec.ret), verdicts, reproducers


def test_check_conformance_and_the_plugin_give_the_same_verdicts(runs: tuple[Path, Run, Run],
                                                                 pytester: pytest.Pytester) -> None:
    folder, cli, conf = runs
    plug = _plugin(folder, pytester)
    codes, verdicts, reproducers = zip(cli, conf, plug, strict=True)
    assert codes == (1, 1, 1)
    assert verdicts[0] == verdicts[1] == verdicts[2], verdicts
    statuses = {claim: status for claim, (status, _) in verdicts[0].items()}
    assert set(statuses) == set(CLAIMS)
    assert statuses["ATT-2"] == DEVIATION and statuses["TOK-3"] == PASSED, statuses
    assert statuses["EMB-5"] == statuses["REF-1"] == FAILED, statuses  # a stale entry, an unlisted failure
    assert reproducers[0] == reproducers[1] == reproducers[2] and len(reproducers[0]) == 2, reproducers
    assert all(f"--expectations {folder}" in r and "--profile ci" in r for r in reproducers[0]), reproducers


def test_a_check_runs_one_claim_as_it_runs_many(tmp_path: Path) -> None:
    """run(claim), the plugin's call, and run_all, check's and conformance's, on one Check, and on a Check given the
    target already built: the same verdicts."""
    from spec.catalog import CATALOG

    folder = _folder(tmp_path)
    check = Check(TARGET, expectations=folder, profile="ci", shrink_seconds=0)
    claims = [CATALOG[c] for c in ("ATT-2", "TOK-3")]
    many = [(r.claim, r.status, r.examples) for r in check.run_all(claims)]
    again = Check(TARGET, expectations=folder, profile="ci", shrink_seconds=0, target=check.target)
    one = [(r.claim, r.status, r.examples) for r in (again.run(c) for c in claims)]
    assert many == one and many[0][1] == DEVIATION and many[1][1] == PASSED, (many, one)


def test_a_bad_expectations_file_is_refused_before_the_target_is_built(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from spec.errors import InputError
    from spec.targets import registry

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the target was built")

    monkeypatch.setattr(registry, "resolve", refuse)
    (tmp_path / "mutant-attn-scale-none.toml").write_text("[[deviation]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mutant-attn-scale-none\.toml"):
        Check(TARGET, expectations=tmp_path, profile="ci")
