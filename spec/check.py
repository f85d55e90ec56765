"""Checking a target: the one path that ``next-token-spec check``, ``python -m spec.conformance`` and the pytest
plugin share.

A :class:`Check` is one target with its options, made once: it reads the target's expected deviations
(spec.expectations: the built-in targets' committed folder by default, another file or folder, or none), builds the
target through spec.targets.registry (or takes one already built), and runs claims through spec.runner.run_claim
with the options of the run, which the reproducer of a failure repeats. ``run(claim)`` checks one claim (a pytest
item); ``run_all(claims)`` checks several in catalog order, in this process or in worker processes (spec.pool),
handing each result to ``on_result`` as soon as it is known. So a target gets the same verdict from each caller.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import settings

from spec import runner
from spec.catalog import CATALOG, Claim, load_all
from spec.expectations import BUILTIN, Deviation, for_target
from spec.runner import DEFAULT_SHRINK_SECONDS, Invocation, OnProgress, Result
from spec.target import Target
from spec.targets import registry


class Check:
    """One target checked with one set of options.

    ``expectations``: a TOML file or a folder of ``<target>.toml`` (default: :data:`spec.expectations.BUILTIN`);
    None: expect no deviation. ``profile``: a registered Hypothesis profile to run under (spec.profiles); None: the
    settings in force (pytest's ``--hypothesis-profile``). ``shrink_seconds``: None is the runner's default.
    ``target``: one already built from ``target_spec`` on ``device`` in ``dtype`` (the plugin builds each target once
    per session); else the registry builds it, after the expectations are read (a bad file costs no model load).
    Bad input is spec.errors.InputError, as the registry and spec.expectations raise it.
    """

    def __init__(self, target_spec: str, *, device: str = "cpu", dtype: str = "float32",
                 expectations: str | Path | None = BUILTIN, profile: str | None = None, seed: int | None = None,
                 shrink_seconds: float | None = None, timeout: float | None = None,
                 target: Target | None = None) -> None:
        load_all()  # every claim registered: an expectation naming no claim is told apart from one not loaded yet
        runner.check_shrink_seconds(shrink_seconds)  # the budgets before any work, as the expectations
        runner.check_timeout(timeout)
        self.target_spec, self.device, self.dtype, self.profile = target_spec, device, dtype, profile
        self.deviations: dict[str, Deviation] = ({} if expectations is None else
                                                 for_target(expectations, target_spec, set(CATALOG)))
        self._target: Target | None = (target if target is not None else
                                       registry.resolve(target_spec, device=device, dtype=dtype))
        self.settings = None if profile is None else settings.get_profile(profile)
        named = None if expectations is None or Path(expectations) == BUILTIN else str(expectations)
        self.invocation = Invocation(
            target_spec=target_spec, profile=str(settings._current_profile) if profile is None else profile,
            device=device, dtype=dtype, expectations=named, no_expectations=expectations is None, seed=seed,
            shrink_seconds=DEFAULT_SHRINK_SECONDS if shrink_seconds is None else shrink_seconds, timeout=timeout)

    @property
    def target(self) -> Target:
        """The built target (until a run in worker processes lets this process's copy go)."""
        if self._target is None:
            raise RuntimeError(f"{self.target_spec}: this process's copy of the target was released for the workers")
        return self._target

    def run(self, claim: Claim, *, progress: OnProgress | None = None) -> Result:
        """Check one claim, with its expected deviation if the target has one; never raises for a claim failure."""
        return runner.run_claim(claim, self.target, profile=self.settings, deviation=self.deviations.get(claim.id),
                                invocation=self.invocation, progress=progress)

    def run_all(self, claims: Sequence[Claim], *, jobs: int = 1, threads: int = 1,
                progress: OnProgress | None = None,
                on_result: Callable[[Result], None] | None = None) -> list[Result]:
        """Check ``claims``: here one after another (``jobs`` 1), or in ``jobs`` worker processes of ``threads`` torch
        threads each, which build the target again (this process's copy is let go first; needs a named ``profile``).
        ``on_result`` sees each result as it is known; the list returned is in the order of ``claims``. A Ctrl-C
        (KeyboardInterrupt) propagates once the workers are ended; what finished was handed to ``on_result``."""
        if jobs > 1:
            from spec.pool import Setup, release_parent_copy, run_pool

            if self.profile is None:
                raise ValueError("a run in worker processes needs a named Hypothesis profile")
            setup = Setup(self.target_spec, self.device, self.dtype, self.profile, self.invocation, threads,
                          tuple(sys.path))
            self._target = None
            release_parent_copy()
            return run_pool(claims, setup, jobs, deviations=self.deviations, progress=progress, on_result=on_result)
        results = []
        for c in claims:
            results.append(self.run(c, progress=progress))
            if on_result is not None:
                on_result(results[-1])
        return results


__all__ = ["Check"]
