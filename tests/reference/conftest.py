"""Shared fixtures for the unit tests of ``reference/``.

Everything here is deterministic: random inputs come from explicitly seeded
``torch.Generator`` objects (never torch's global RNG), and Hypothesis tests set
``derandomize=True`` in their own settings so CI sees the same examples every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from reference import PRESETS, Transformer, build


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances for comparing two orderings of the same tiny-model computation.

    float64: unit roundoff 1.1e-16; a two-layer d_model=32 model's logits (magnitude
      ~1-10) computed by two different kernels differ by ~1e-15, so 1e-10 leaves five
      orders of margin and is still far below any wiring bug (those move logits by >1e-3).
    float32: unit roundoff 6e-8; d_model=32-term dot products over two layers and a
      97-way unembedding accumulate ~1e-6 absolute on logits of magnitude ~1-10. 1e-4
      leaves a wide margin against kernel-order noise while wiring bugs move logits by
      >1e-3.
    float16/bfloat16: 8 (bf16) or 11 (fp16) mantissa bits; 5e-2 covers a few roundings.
    """
    if dtype == torch.float64:
        return {"atol": 1e-10, "rtol": 1e-10}
    if dtype == torch.float32:
        return {"atol": 1e-4, "rtol": 1e-4}
    return {"atol": 5e-2, "rtol": 5e-2}


@pytest.fixture(scope="module", autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    """Run these tiny-tensor tests on one intra-op thread, restoring the setting afterwards.

    The tensors here are a few hundred elements: threads buy nothing, and on a loaded
    2-core CI runner OpenMP workers spinning against each other made one forward pass
    ~20x slower (115 ms instead of 5 ms). Scoped to this directory's modules only.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tol() -> Callable[[torch.dtype], dict[str, float]]:
    return tolerance


@pytest.fixture(scope="session")
def model_for() -> Callable[..., Transformer]:
    """A factory of seeded tiny models, built once per (preset, dtype, seed) and shared.

    Shared models must not be mutated by tests (forward passes never mutate them;
    tests that change ``attention_impl`` or weights build their own with ``reference.build``).
    """
    built: dict[tuple[str, torch.dtype, int], Transformer] = {}

    def get(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> Transformer:
        key = (name, dtype, seed)
        if key not in built:
            built[key] = build(PRESETS[name], seed=seed, dtype=dtype)
        return built[key]

    return get


@pytest.fixture
def gen() -> torch.Generator:
    """A freshly seeded CPU generator for test inputs."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The path of SmolLM2's GGUF: a failure in CI (NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1), else a skip naming why."""
    from spec.runner import require_trained
    from spec.targets import smollm2

    try:
        return smollm2.locate_gguf(download_missing=False)
    except smollm2.ModelUnavailable as err:
        if require_trained():
            pytest.fail(f"SmolLM2 is required here (NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1) but unavailable: {err}")
        pytest.skip(f"SmolLM2 GGUF not available: {err}")
