"""Hypothesis profiles: ``ci`` (derandomized, bounded, never flaky), ``dev`` and ``thorough``.

Chosen by ``--hypothesis-profile NAME`` or the environment variable
NEXT_TOKEN_SPEC_PROFILE; the default is ``ci`` when the CI variable is set, else ``dev``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

from spec.errors import InputError

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None, database=None,
                          print_blob=True, suppress_health_check=_SLOW_OK)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=_SLOW_OK,
                          phases=list(Phase))

PROFILES = ("ci", "dev", "thorough")


def default_profile() -> str:
    """NEXT_TOKEN_SPEC_PROFILE, else ci under CI, else dev; InputError naming the variable for another name (the
    command line then says so in one line, exit 2, and pytest as a usage error, rather than with a traceback)."""
    name = os.environ.get("NEXT_TOKEN_SPEC_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    if name not in PROFILES:
        raise InputError(f"NEXT_TOKEN_SPEC_PROFILE must be one of {', '.join(PROFILES)}, got {name!r}")
    return name


def load(name: str | None = None) -> str:
    """Load a profile (the default when None) and return its name."""
    chosen = name or default_profile()
    settings.load_profile(chosen)
    return chosen
