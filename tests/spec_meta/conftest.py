"""Shared fixtures of the spec's meta-tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from spec.runner import require_trained
from spec.targets import smollm2


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: tiny models run fastest so, without fighting other test workers for cores, and the kill
    matrix was generated so (reductions in the same order). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2_available() -> None:
    """SmolLM2's GGUF must be present: a failure in CI (NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1), else a skip naming why."""
    try:
        smollm2.locate_gguf(download_missing=False)
    except smollm2.ModelUnavailable as err:
        if require_trained():
            pytest.fail(f"SmolLM2 is required here (NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1) but unavailable: {err}")
        pytest.skip(f"SmolLM2 GGUF not available: {err}")
