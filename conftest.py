"""Project-wide pytest setup.

The spec plugin (spec/plugin.py, loaded through its pytest11 entry point once the
project is installed) adds ``--target``, ``--device`` (cpu, cuda, or all available)
and ``--dtype``, and loads a Hypothesis profile: ``ci``, ``dev`` or ``thorough``,
chosen by ``--hypothesis-profile`` or NEXT_TOKEN_SPEC_PROFILE (``ci`` when $CI is set).
This file adds the fixtures the project's own tests share.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # under `pytest -n N` share the cores between workers instead of oversubscribing them:
    # tiny-model forwards are 5-20x slower when 2 workers each run 2 torch threads on 2 cores
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking a ``device`` argument run once per device that --device selects."""
    if "device" in metafunc.fixturenames:
        from spec.plugin import devices

        chosen = devices(metafunc.config)
        marks = {"cuda": [pytest.mark.cuda]}
        metafunc.parametrize("device", [pytest.param(d, marks=marks.get(d, [])) for d in chosen])


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("CUDA not available on this machine (the cuda marker needs a GPU)")
