"""Exposure pinned (spec/exposure.py, spec/targets/exposure.toml): for every built-in target, the claims it runs
fully, partly and not at all; the pytest plugin fails a catalog item whose result moves, so losing a capability
fails CI (issue #12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spec import exposure
from spec.catalog import CATALOG, ordered
from spec.runner import FAILED, ILLUSTRATED, NEEDS_TRAINED, NOT_EXPOSED, PARTLY, PASSED
from spec.targets.reference_target import ReferenceTarget
from spec.targets.registry import BUILTIN_TARGETS

ROOT = Path(__file__).resolve().parents[2]


def test_the_pin_covers_every_built_in_target_and_names_only_catalog_claims() -> None:
    ordered()
    pins = exposure.load()
    assert set(pins) == set(BUILTIN_TARGETS), set(pins) ^ set(BUILTIN_TARGETS)
    for spec, table in pins.items():
        assert set(table) <= set(CATALOG), (spec, set(table) - set(CATALOG))


def test_a_claim_pinned_not_at_all_is_one_whose_needs_the_target_lacks_or_that_refuses_every_example() -> None:
    """The static half of the pin, checked without running anything: a claim the reference presets could not even
    start (claim.missing) is pinned "not at all", and every claim they can start is pinned to run."""
    ordered()
    pins = exposure.load()
    for spec in ("reference:gpt2-tiny", "reference:llama-tiny", "reference:bloom-tiny"):
        target = ReferenceTarget.from_preset(spec.split(":")[1])
        for c in ordered():
            if c.missing(target):
                assert pins[spec].get(c.id) == exposure.NONE, (spec, c.id)
            else:
                assert pins[spec].get(c.id, exposure.FULL) != exposure.NONE, (spec, c.id)


def test_how_far_a_status_ran() -> None:
    assert exposure.how_far(PASSED) == exposure.how_far(ILLUSTRATED) == exposure.how_far(FAILED) == exposure.FULL
    assert exposure.how_far(PARTLY) == exposure.PARTLY_RUN
    assert exposure.how_far(NOT_EXPOSED) == exposure.how_far(NEEDS_TRAINED) == exposure.NONE


def test_losing_or_gaining_a_capability_is_reported_and_an_unpinned_target_is_not_judged() -> None:
    pins = {"t": {"NORM-1": exposure.PARTLY_RUN, "TR-1": exposure.NONE}}
    lost = exposure.mismatch(pins, "t", "ATT-1", NOT_EXPOSED, "missing capability: queries_keys")
    assert lost and "lost a capability" in lost and "ATT-1" in lost and "queries_keys" in lost
    assert "lost a capability" in str(exposure.mismatch(pins, "t", "ATT-1", PARTLY, "build: ..."))
    assert "runs more than pinned" in str(exposure.mismatch(pins, "t", "NORM-1", PASSED, ""))
    assert exposure.mismatch(pins, "t", "NORM-1", PARTLY, "final_norm: ...") is None
    assert exposure.mismatch(pins, "t", "TR-1", NEEDS_TRAINED, "") is None
    assert exposure.mismatch(pins, "t", "ATT-1", FAILED, "") is None  # a failure ran fully: its own verdict
    assert exposure.mismatch(pins, "other", "ATT-1", NOT_EXPOSED, "") is None


def test_render_and_read_back_round_trip(tmp_path: Path) -> None:
    observed = [("t", "ATT-1", PASSED), ("t", "NORM-1", PARTLY), ("t", "TR-1", NEEDS_TRAINED),
                ("u", "ATT-1", NOT_EXPOSED)]
    f = tmp_path / "exposure.toml"
    f.write_text(exposure.render(observed), encoding="utf-8")
    assert exposure.load(f) == {"t": {"NORM-1": exposure.PARTLY_RUN, "TR-1": exposure.NONE},
                                "u": {"ATT-1": exposure.NONE}}


def test_the_plugin_fails_a_built_in_target_that_lost_a_capability(tmp_path: Path) -> None:
    """pytest --target with a pin that says NORM-1 runs fully on a target without sublayers or final_norm."""
    (tmp_path / "lost.py").write_text(
        "from spec.target import Target\n"
        "from spec.targets.reference_target import ReferenceTarget\n"
        "class Lost(ReferenceTarget):\n"
        "    sublayers = Target.sublayers\n"
        "    final_norm = Target.final_norm\n"
        "def lost():\n"
        "    return Lost.from_preset('gpt2-tiny')\n", encoding="utf-8")
    pin = tmp_path / "pin.toml"
    pin.write_text('["lost:lost"]\npartly = []\nnone = []\n', encoding="utf-8")
    code = ("import sys, pytest; from spec import exposure; from pathlib import Path; "
            f"exposure.PINNED = Path({str(pin)!r}); "
            "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', '--target', 'lost:lost', '-k', 'NORM-1', "
            "'--no-expectations', '--hypothesis-profile', 'ci', '-p', 'no:randomly']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**_env(), "PYTHONPATH": f"{tmp_path}:{ROOT}"}, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "exposure of NORM-1 on lost:lost changed (lost a capability)" in out, out


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("CI", "NEXT_TOKEN_SPEC_PROFILE", "PYTEST_ADDOPTS")}
