"""Embedding: row selection (EMB-1), the one-hot product (EMB-2), order (EMB-3), scale, sparse gradient (EMB-4)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.embedding import Embedding, embed, one_hot_embed

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)


def table(vocab: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(vocab, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def rows_by_hand(ids: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    """E[ids] written as Python loops over rows, independent of advanced indexing."""
    return torch.stack([torch.stack([E[i].clone() for i in row]) for row in ids.tolist()])


@st.composite
def ids_and_table(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    vocab = draw(st.integers(1, 40))
    d = draw(st.integers(1, 12))
    b, t = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    flat = draw(st.lists(st.integers(0, vocab - 1), min_size=b * t, max_size=b * t))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    E = table(vocab, d, dtype, draw(st.integers(0, 2**16)))
    return torch.tensor(flat, dtype=torch.long).view(b, t), E


@PROPERTY
@given(ids_and_table())
def test_embed_is_row_selection_bit_for_bit(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    ids, E = case
    out = embed(ids, E)
    assert out.shape == (*ids.shape, E.shape[1])  # EMB-3: [batch, seq, d_model], rows in order
    assert out.dtype == E.dtype
    assert torch.equal(out, rows_by_hand(ids, E))
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            assert torch.equal(out[b, t], E[int(ids[b, t])])


@PROPERTY
@given(ids_and_table())
def test_one_hot_product_equals_lookup_exactly(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    # Exact, not approximate: each output entry is 1 * E[t, j] plus zeros, which is exact
    # in IEEE float32 and float64 (no rounding can occur).
    ids, E = case
    assert torch.equal(one_hot_embed(ids, E), rows_by_hand(ids, E))


def test_int32_ids_are_accepted() -> None:
    E = table(7, 3, torch.float32, 0)
    ids = torch.tensor([[6, 0, 3]], dtype=torch.int32)
    assert torch.equal(embed(ids, E), rows_by_hand(ids, E))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 2.0, 32**0.5, 0.1])
def test_scale_multiplies_rows(dtype: torch.dtype, scale: float) -> None:
    E = table(9, 5, dtype, 3)
    ids = torch.tensor([[1, 8, 1], [0, 2, 4]])
    out = embed(ids, E, scale)
    assert out.dtype == dtype
    # The scale is cast to the table's dtype once and the product is rounded once, so
    # the result is exactly elementwise row * dtype(scale).
    expected = rows_by_hand(ids, E) * torch.tensor(scale, dtype=dtype)
    assert torch.equal(out, expected)
    if scale == 1.0:
        assert torch.equal(out, rows_by_hand(ids, E))


def test_embedding_module_holds_the_table_and_scales() -> None:
    m = Embedding(13, 6, scale=3.0, dtype=torch.float64)
    assert m.E.shape == (13, 6) and m.E.dtype == torch.float64 and m.E.requires_grad
    with torch.no_grad():
        m.E.copy_(table(13, 6, torch.float64, 5))
    ids = torch.tensor([[12, 0, 5, 5]])
    assert torch.equal(m(ids), rows_by_hand(ids, m.E.detach()) * 3.0)


def test_gradient_reaches_only_rows_that_occur() -> None:
    # EMB-4: the table is trained sparsely; absent tokens get exactly zero gradient.
    m = Embedding(10, 4, dtype=torch.float64)
    with torch.no_grad():
        m.E.copy_(table(10, 4, torch.float64, 9))
    ids = torch.tensor([[2, 7, 2], [5, 5, 0]])
    weights = torch.arange(24, dtype=torch.float64).view(2, 3, 4)
    (m(ids) * weights).sum().backward()
    grad = m.E.grad
    assert grad is not None
    present = {0, 2, 5, 7}
    for row in range(10):
        if row in present:
            assert bool((grad[row] != 0).any())
        else:
            assert torch.equal(grad[row], torch.zeros(4, dtype=torch.float64))
    # Row 2 occurs at (0,0) and (0,2): its gradient is the sum of those positions' weights.
    torch.testing.assert_close(grad[2], weights[0, 0] + weights[0, 2], atol=0, rtol=0)
