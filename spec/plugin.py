"""The pytest plugin: ``pytest --target X`` runs the whole catalog against X.

Installed through the ``pytest11`` entry point, so any project's test suite can run
``pytest --target mypkg.adapter:build``. Each (target, claim) pair becomes one test
item: passed claims pass, failed claims fail with the shrunk counterexample and a
command that reproduces it, claims the target cannot run (a missing capability, or
random weights for a claim about trained ones) are skipped with the reason named, and
expected deviations (spec/targets/expectations/<target>.toml by default, see spec.expectations) are xfailed, and a
listed deviation whose claim passes fails, so stale entries cannot hide anything.
NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1 makes a trained model that cannot be located
(spec.targets.smollm2) a failure instead of a skip. Each item runs its claim through spec.check.Check, the path
``next-token-spec check`` and ``python -m spec.conformance`` take, so a target gets the same verdict from each.
Under pytest-xdist, a target's claims stay on one worker where there are enough targets to go round
(``pytest_xdist_make_scheduler``), so no target is loaded twice in a run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from spec import profiles
from spec.catalog import Claim, ordered
from spec.check import Check
from spec.cli import model_unavailable, shrink_seconds_option
from spec.errors import InputError
from spec.runner import DEVIATION, FAILING, HELD, ILLUSTRATED, PARTLY, Result
from spec.target import Target
from spec.targets import registry

ENV_TARGET = "NEXT_TOKEN_SPEC_TARGET"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("next-token-spec")
    group.addoption("--target", action="append", default=[], metavar="TARGET",
                    help=f"run the claim catalog against TARGET ({registry.forms_text()}; see `next-token-spec "
                         "check -h`); repeatable; also $NEXT_TOKEN_SPEC_TARGET (comma-separated); builtin: "
                         "every built-in target")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda", "all"),
                    help="device for targets and device-parametrized tests: cpu, cuda, or all available")
    group.addoption("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"),
                    help="dtype for targets (float32, float64, bfloat16, float16)")
    group.addoption("--expectations", default=None, metavar="DIR",
                    help="folder of per-target expected-deviation files (<target>.toml); overrides the ini option "
                         "next_token_spec_expectations and the default, the built-in targets' committed files")
    group.addoption("--no-expectations", action="store_true",
                    help="expect no deviation on any target (each listed deviation fails as what it is)")
    group.addoption("--shrink-seconds", type=shrink_seconds_option, default=None, metavar="S",
                    help="wall-clock budget for shrinking each failing claim's counterexample (default 5; 0: do not "
                         "shrink; inf: no bound); past it the smallest example found so far is reported")
    parser.addini("next_token_spec_targets", "targets checked when no --target is given", type="linelist",
                  default=[])
    parser.addini("next_token_spec_expectations", "folder of per-target expected-deviation files, relative to the "
                  "ini file, used when --expectations is not given (default: the built-in targets' committed "
                  "files, spec/targets/expectations/)", default="")


def devices(config: pytest.Config) -> list[str]:
    """The devices --device selects; 'all' means cpu plus cuda when present."""
    import torch

    choice = config.getoption("--device")
    if choice == "all":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [choice]


def selected_targets(config: pytest.Config) -> list[str]:
    """--target and $NEXT_TOKEN_SPEC_TARGET; else the ini default, but only for a run of the whole suite."""
    chosen = list(config.getoption("--target"))
    env = os.environ.get(ENV_TARGET, "")
    chosen += [t.strip() for t in env.split(",") if t.strip()]
    if not chosen and not config.getoption("file_or_dir"):
        chosen = list(config.getini("next_token_spec_targets"))
    if chosen == ["builtin"]:
        from spec.targets.registry import BUILTIN_TARGETS

        chosen = list(BUILTIN_TARGETS)
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(id): the test checks the named spec claim")
    # ClaimItem marks the claims it runs on the GPU; registered here so --strict-markers accepts it in any project
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped with a reason where none is present)")
    if not config.getoption("hypothesis_profile", None):
        try:
            profiles.load()
        except InputError as err:
            raise pytest.UsageError(str(err)) from None
    _refuse_absent_cuda(config)
    _refuse_bad_targets(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``pytest -n N`` with xdist's default distribution, the claim items of one target (and device) go to one
    worker when there are at least as many targets as workers: each target is then loaded once in the run, not once
    per worker (SmolLM2 through transformers' GGUF loader takes ~25 s and 1 GB in each process that loads it), and
    the other tests are shared out one by one as before. With fewer targets than workers, claims are shared out one
    by one, so one big target still runs on every worker. Any other --dist is left as chosen."""
    if config.getoption("dist", "no") != "load":
        return None
    n_targets = len(selected_targets(config)) * len(devices(config))
    if n_targets < int(config.getoption("numprocesses") or 0):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByTarget(LoadScopeScheduling):  # type: ignore[misc]
        """xdist's scope scheduler with one scope per target: a claim item's node ID up to its claim."""

        def _split_scope(self, nodeid: str) -> str:
            name = nodeid.rpartition("::")[2]
            return name.rpartition("|")[0] if name.startswith("claim[") else nodeid

    return ByTarget(config, log)


def _refuse_bad_targets(config: pytest.Config) -> None:
    """A --target that is no target's name, or an expectations folder that is not a folder, is a usage error at
    start-up (one line, exit 4), not one failure with a traceback per claim."""
    targets = selected_targets(config)
    for spec in targets:
        try:
            registry.check_form(spec)
        except InputError as err:
            raise pytest.UsageError(f"--target {spec}: {err}") from None
    if targets:
        check_expectations_folder(expectations_folder(config))


def check_expectations_folder(folder: Path | None) -> None:
    """pytest.UsageError unless ``folder`` (--expectations or the ini option) is None or an existing folder."""
    if folder is None or folder.is_dir():
        return
    what = "is not a folder" if folder.exists() else "does not exist"
    raise pytest.UsageError(f"expectations folder {folder} {what} (--expectations or the ini option "
                            "next_token_spec_expectations); give a folder of <target>.toml files")


def _refuse_absent_cuda(config: pytest.Config) -> None:
    """``--device cuda`` on a machine without CUDA is a usage error, not a run that skips everything and passes.

    (``--device all`` means the devices present; ``nox -s cuda`` checks for CUDA before it asks for it.)
    """
    if config.getoption("--device") != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: CUDA is not available on this machine (torch.cuda.is_available() is "
                                "False); use --device cpu, or --device all for the devices present")


def pytest_report_header(config: pytest.Config) -> list[str]:
    targets = selected_targets(config)
    if not targets:
        return []
    return [f"next-token-spec: targets {', '.join(targets)}; device {config.getoption('--device')}; "
            f"dtype {config.getoption('--dtype')}; hypothesis profile {settings._current_profile}"]


class TargetUnavailable(Exception):
    """The target of a claim item could not be built (a bad spec, a factory that raised, a model not found): each of
    its items fails with this one line, and the target is not built again for every claim."""


class _Targets:
    """Builds each target once per session (and tries a target that cannot be built only once)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str, str], Target] = {}
        self.refused: dict[tuple[str, str, str], str] = {}

    def get(self, spec: str, device: str, dtype: str) -> Target:
        from spec.targets.registry import resolve

        key = (spec, device, dtype)
        if key in self.refused:
            raise TargetUnavailable(self.refused[key])
        if key not in self.cache:
            try:
                self.cache[key] = resolve(spec, device=device, dtype=dtype)
            except (InputError, RuntimeError) as err:
                if not isinstance(err, InputError) and not model_unavailable(err):
                    raise  # a crash while building is a bug to show whole
                said = " ".join(str(err).split())
                self.refused[key] = said if spec in said else f"target {spec}: {said}"
                raise TargetUnavailable(self.refused[key]) from None
        return self.cache[key]


_TARGETS = _Targets()


class ClaimFailure(Exception):
    def __init__(self, result: Result) -> None:
        super().__init__(result.detail)
        self.result = result


class ClaimItem(pytest.Item):
    """One claim checked on one target."""

    def __init__(self, *, claim: Claim, target_spec: str, device: str, dtype: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.claim, self.target_spec, self.device, self.dtype = claim, target_spec, device, dtype
        self.add_marker(pytest.mark.claim(claim.id))
        if device == "cuda":
            self.add_marker(pytest.mark.cuda)

    def runtest(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            pytest.skip("CUDA not available")
        result = check(self).run(self.claim)
        self.user_properties.append(("examples", result.examples))
        self.user_properties.append(("worst", result.worst))
        self.user_properties.append(("seconds", round(result.seconds, 3)))
        self.user_properties.append(("status", result.status))
        if result.notes:  # choices the sources leave open: information, shown with -rA and in JUnit XML
            self.user_properties.append(("noted", result.notes_line()))
            self.add_report_section("call", "noted", result.notes_line())
        moved = _exposure_moved(self, result)
        if result.status in FAILING:  # failed, or inconclusive (nothing could be checked)
            raise ClaimFailure(result)
        if moved:  # a built-in target ran the claim more or less fully than spec/targets/exposure.toml pins
            pytest.fail(moved, pytrace=False)
        if result.status == DEVIATION:
            pytest.xfail(result.detail)
        if result.status == PARTLY:
            self.add_report_section("call", "partly run", result.detail)
        if result.status not in HELD:
            pytest.skip(f"{self.claim.id} {result.status}: {result.detail}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ClaimFailure):
            from spec.report import failure

            return failure(excinfo.value.result)
        if isinstance(excinfo.value, TargetUnavailable):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.target_spec}::{self.claim.id}"


def _exposure_moved(item: ClaimItem, result: Result) -> str | None:
    """spec.exposure's message when a built-in target's claim ran more or less fully than pinned (compared on the
    CPU in float32 under the derandomized profile the pin was made with; elsewhere the draws differ)."""
    from spec import exposure

    if item.device != "cpu" or item.dtype != "float32" or str(settings._current_profile) != exposure.PIN_PROFILE:
        return None
    return exposure.mismatch(_pins(), item.target_spec, item.claim.id, result.status, result.detail)


_PINS: dict[str, dict[str, str]] = {}


def _pins() -> dict[str, dict[str, str]]:
    from spec import exposure

    if not _PINS:
        _PINS.update(exposure.load())
    return _PINS


_CHECKS: dict[tuple[object, ...], Check] = {}


def check(item: ClaimItem) -> Check:
    """The item's target with this run's options (spec.check, as ``next-token-spec check`` and
    ``python -m spec.conformance`` use it): the target built once per session, its expected deviations read once,
    the options of the run in the reproducer of a failure; a configured expectations folder must exist."""
    config = item.config
    folder = expectations_folder(config)
    shrink, seed, profile = config.getoption("--shrink-seconds"), _seed(config), str(settings._current_profile)
    key = (item.target_spec, item.device, item.dtype, folder, shrink, seed, profile)
    if key not in _CHECKS:
        check_expectations_folder(folder)
        target = _TARGETS.get(item.target_spec, item.device, item.dtype)
        _CHECKS[key] = Check(item.target_spec, device=item.device, dtype=item.dtype, expectations=folder, seed=seed,
                             shrink_seconds=shrink, target=target)
    return _CHECKS[key]


def _seed(config: pytest.Config) -> int | None:
    """Hypothesis's own --hypothesis-seed, when it was given as a number."""
    given = config.getoption("hypothesis_seed", None)
    try:
        return None if given is None else int(given)
    except ValueError:
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport,
                             config: pytest.Config) -> tuple[str, str, str | tuple[str, dict[str, bool]]] | None:
    """A claim's outcome word with its examples and seconds, e.g. ``PASSED (25 examples, 0.4 s)`` under -v.

    A claim that held with parts skipped counts as "partly run" and an illustration as "illustrated", each its own
    tally in pytest's summary line (never among the passes). Only the call phase of a claim item that passed or
    failed; xfail, skips and everything else keep pytest's words.
    """
    props = dict(report.user_properties)
    if report.when != "call" or "examples" not in props or "seconds" not in props or hasattr(report, "wasxfail"):
        return None
    extra = f" ({props['examples']} examples, {props['seconds']:.1f} s)"
    if report.passed and props.get("status") == PARTLY:
        return "partly run", "p", ("PARTLY RUN" + extra, {"yellow": True})
    if report.passed and props.get("status") == ILLUSTRATED:
        return "illustrated", "i", ("ILLUSTRATED" + extra, {"cyan": True})
    if report.passed:
        return "passed", ".", ("PASSED" + extra, {"green": True})
    if report.failed:
        return "failed", "F", ("FAILED" + extra, {"red": True})
    return None


def expectations_folder(config: pytest.Config) -> Path | None:
    """--expectations (relative to the working directory), else the ini option (relative to the ini file), else the
    built-in targets' committed files, as ``next-token-spec check`` uses; None with --no-expectations."""
    from spec.expectations import BUILTIN

    if config.getoption("--no-expectations"):
        return None
    given = config.getoption("--expectations")
    if given:
        return Path(given)
    ini = str(config.getini("next_token_spec_expectations") or "")
    if not ini:
        return BUILTIN
    return (config.inipath.parent if config.inipath else config.rootpath) / ini


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    targets = selected_targets(config)
    if not targets:
        return
    dtype = config.getoption("--dtype")
    for spec in targets:
        for device in devices(config):
            for c in ordered():
                name = f"claim[{spec}|{device}|{c.id}]"
                items.append(ClaimItem.from_parent(session, name=name, claim=c, target_spec=spec,
                                                   device=device, dtype=dtype))
