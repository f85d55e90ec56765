"""HFTarget.decode passes the KV cache under the keyword the model's forward declares (issue #13).

transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns on every
call with a FutureWarning and goes in 5.40); 4.48, the oldest the project allows, only
knows ``past_key_values``. The keyword is read from the signature: both kinds of model
decode, and the installed transformers' does so without a FutureWarning.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from spec.targets.hf_target import HFTarget


class OldStyleLM(nn.Module):
    """An HF-4.x-style causal LM: takes and returns ``past_key_values`` (the cache: every id seen so far)."""

    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=64)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, past_key_values: Any = None,
                use_cache: bool = False) -> SimpleNamespace:
        seen = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        logits = self.table[seen].cumsum(1)[:, -input_ids.shape[1]:]  # position i: sum of rows of ids 0..i
        return SimpleNamespace(logits=logits, past_key_values=seen if use_cache else None)


def test_old_keyword_where_forward_declares_it() -> None:
    target = HFTarget(OldStyleLM())
    assert target._cache_arg == "past_key_values"
    ids = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(target.decode(ids, 2), target.logits(ids))


def test_installed_transformers_decodes_without_future_warning() -> None:
    pytest.importorskip("transformers")
    from spec.targets.hf_presets import build_hf

    target = HFTarget(build_hf("llama", seed=1))
    ids = torch.randint(0, target.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        got = target.decode(ids, 2)
    torch.testing.assert_close(got, target.logits(ids), rtol=1e-4, atol=1e-4)
