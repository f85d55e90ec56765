"""reference.convert and REF-1 never copy a model's weights (issue #13).

Checking a model of billions of parameters must not hold its weights twice. For every
HF family preset (spec.targets.hf_presets, tiny configs with random weights), the model
``from_hf`` builds must hold the HF tensors themselves or views of them: every
parameter's storage is one of the HF model's storages. The exceptions are the tensors
no strided view can express, each documented where it is made (reference.convert.common):

- the per-head interleaved q/k/v rows of Bloom, GPT-NeoX and grouped Falcon
  (``per_head_rows``): W_Q, W_K, W_V and their biases;
- Gemma's norm gains, stored as w and used as 1 + w (``shift_gain``).

The converted model still computes HF's logits (the full differential comparison is
tests/reference/test_convert_hf.py), and REF-1's independent reference shares the
converted tensors too.
"""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from reference import build, preset
from reference.block import Block
from reference.convert import from_hf
from reference.model import Transformer
from spec.edits import independent_reference
from spec.targets.hf_presets import HF_PRESETS, build_hf
from spec.targets.hf_target import HFTarget
from spec.targets.reference_target import ReferenceTarget

pytestmark = pytest.mark.hf

QKV = r"blocks\.\d+\.attn\.[Wb]_[QKV]"
NORM_GAIN = r"(blocks\.\d+\.N[12]|final_norm)\.weight"

# The converted parameters that are new tensors, per preset, and why (see the module docstring).
COPIED: dict[str, str] = {
    "gpt_neox": QKV,  # per head: q, k, v rows interleaved
    "bloom": QKV,  # per head: q, k, v rows interleaved
    "falcon-new": QKV,  # per KV group: n_rep query heads, one key head, one value head
    "gemma": NORM_GAIN,  # 1 + w
}


def storages(module: nn.Module) -> set[int]:
    """The data pointers of the storages behind every parameter and buffer of ``module``."""
    tensors = [*module.parameters(), *module.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors}


def copied(model: Transformer, source: set[int]) -> list[str]:
    """Names of the model's parameters whose storage is none of ``source``."""
    return [name for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.untyped_storage().data_ptr() not in source]


@pytest.mark.parametrize("name", sorted(HF_PRESETS))
def test_from_hf_shares_the_hf_weights(name: str) -> None:
    hf = build_hf(name, seed=1)
    model = from_hf(hf)
    allowed = re.compile(COPIED.get(name, r"(?!)"))  # (?!) matches nothing
    unexpected = [n for n in copied(model, storages(hf)) if not allowed.fullmatch(n)]
    assert not unexpected, f"{name}: converted parameters that copy HF weights: {unexpected}"
    ids = torch.randint(0, model.cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(COPIED))
def test_documented_copies_are_the_only_ones(name: str) -> None:
    """The allowance is not slack: each listed family really does copy what is listed, and nothing else."""
    hf = build_hf(name, seed=1)
    new = copied(from_hf(hf), storages(hf))
    assert new and all(re.fullmatch(COPIED[name], n) for n in new), new


@pytest.mark.parametrize("name", ["llama", "gpt2", "phi", "falcon", "opt"])
def test_views_are_not_contiguous_copies(name: str) -> None:
    """A transposed HF Linear stays a transposed view (stride (1, in)), not a contiguous copy."""
    hf = build_hf(name, seed=1)
    model = from_hf(hf)
    W_O = cast(Block, model.blocks[0]).attn.W_O
    if name == "gpt2":  # Conv1D stores [in, out]: the tensor itself
        assert W_O.is_contiguous()
    else:
        assert W_O.stride() == (1, W_O.shape[0])


def test_an_edit_to_the_converted_model_reaches_hf() -> None:
    """Sharing is real: the converted model is a live handle on the HF weights."""
    hf = build_hf("llama", seed=1)
    model = from_hf(hf)
    with torch.no_grad():
        cast(Block, model.blocks[0]).mlp.W_out.mul_(0)
    assert float(hf.model.layers[0].mlp.down_proj.weight.detach().abs().max()) == 0.0


def test_another_dtype_converts_each_tensor() -> None:
    """Asking for another dtype is a conversion, a copy by definition; the source is left as it was."""
    hf = build_hf("llama", seed=1)
    model = from_hf(hf, dtype=torch.float64)
    assert model.dtype == torch.float64 and not set(storages(model)) & storages(hf)
    assert next(hf.parameters()).dtype == torch.float32


def test_from_hf_allocates_no_initial_weights(monkeypatch: Any) -> None:
    """The model is built on the meta device: no full-size tensor is allocated and then replaced."""
    hf = build_hf("llama", seed=1)
    made: list[str] = []
    real_init = Transformer.__init__

    def spy(self: Transformer, cfg: Any, *, device: Any = None, dtype: Any = None) -> None:
        made.append(str(torch.device(device)) if device is not None else "default")
        real_init(self, cfg, device=device, dtype=dtype)

    monkeypatch.setattr(Transformer, "__init__", spy)
    from_hf(hf)
    assert made == ["meta"]


@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt_neox", "bloom", "phi", "falcon"])
def test_ref1_reference_shares_the_target_weights(name: str) -> None:
    """REF-1's independent reference holds no tensor of its own beyond the converter's documented copies."""
    hf = build_hf(name, seed=1)
    target = HFTarget(hf, name=f"hf:{name}")
    ref = independent_reference(target)
    assert ref.attention_impl == "explicit"
    allowed = re.compile(COPIED.get(name, r"(?!)"))
    unexpected = [n for n in copied(ref, storages(hf)) if not allowed.fullmatch(n)]
    assert not unexpected, unexpected


def test_ref1_reference_of_a_reference_target_is_its_own_weights() -> None:
    model = build(preset("llama-tiny"), seed=3)
    ref = independent_reference(ReferenceTarget(model))
    assert ref is not model and not copied(ref, storages(model))
    ids = torch.randint(0, model.cfg.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ref(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
