"""The adapter kit (spec.kit, issue #16): what it derives from attribute paths is the module's own computation.

Oracles that are not the code under test: the tiny GPT's modules called by hand (examples/tiny_gpt.py), the
hand-written adapter's sublayers (examples/tiny_gpt_adapter.py), and for a differently written module, a
transformers GPT-2, HFTarget's reading of the same model (HF's hidden_states) and the reference converted from it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings
from torch import Tensor

from spec import profiles  # noqa: F401  (registers the "ci" profile)
from spec.catalog import CATALOG, load_all
from spec.errors import InputError
from spec.kit import Layout, ModuleTarget, resolve_path
from spec.runner import PARTLY, PASSED, run_claim
from spec.target import NotExposed
from spec.tolerance import CLASSES, assert_close

ROOT = Path(__file__).resolve().parents[2]
TOL = CLASSES["float32"]


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(ROOT))
    yield


def _gpt(**fields: object) -> Any:
    """examples/tiny_gpt.py's GPT (typed Any: its submodules are reached by attribute throughout)."""
    from examples.tiny_gpt import GPT, GPTConfig

    return GPT(GPTConfig(**fields)).init_weights(0, std=32 ** -0.5).eval()  # type: ignore[arg-type]


def _kit(gpt: Any, **given: object) -> ModuleTarget:
    paths: dict[str, object] = dict(logits=gpt, embedding="wte.weight", unembedding="lm_head", blocks="h",
                                    final_norm="ln_f",
                                    sublayers=Layout("ln_1", "attn", "ln_2", "mlp", parallel=gpt.cfg.parallel))
    return ModuleTarget(gpt, **(paths | given))  # type: ignore[arg-type]


def _ids(shape: tuple[int, int] = (2, 7), seed: int = 0) -> Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _by_hand(gpt: Any, ids: Tensor, mask: Tensor) -> list[Tensor]:
    """The residual stream computed with the model's own modules, positions and mask as GPT.forward builds them."""
    real = mask.bool()
    pos = (real.long().cumsum(dim=1) - 1).clamp(min=0)
    at = torch.arange(ids.shape[1])
    visible = ((at[None, :] <= at[:, None]) & real[:, None, :]) | (at[None, :] == at[:, None])
    states = [gpt.wte(ids) + gpt.wpe(pos)]
    for block in gpt.h:
        states.append(block(states[-1], visible))
    return states


@pytest.mark.parametrize("padded", [False, True])
def test_hooked_residual_states_are_the_blocks_own_computation(padded: bool) -> None:
    gpt, ids = _gpt(), _ids()
    mask = torch.ones_like(ids)
    if padded:
        mask[0, :3] = 0
    target = _kit(gpt)
    states = target.residual_states(ids, mask if padded else None)
    want = _by_hand(gpt, ids, mask)
    assert len(states) == len(want) == 3
    for got, expected in zip(states, want, strict=True):
        assert torch.equal(got, expected)
    assert torch.equal(target.embed(ids), want[0]) if not padded else True
    # without final_norm= the last state is the last block's output: the same tensor here
    bare = _kit(gpt, final_norm=None)
    assert torch.equal(bare.residual_states(ids, mask)[-1], want[-1])
    assert "final_norm" not in bare.capabilities


def test_the_kits_sublayers_are_the_hand_written_adapters() -> None:
    """Norms and MLP called directly, attention and block inside a forward pass on a dummy input, for both
    wirings: equal to examples/tiny_gpt_adapter.py's GPTSublayers, which call the block with a causal mask."""
    from examples.tiny_gpt_adapter import GPTSublayers

    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    for parallel in (False, True):
        gpt = _gpt(parallel=parallel)
        kit, hand = _kit(gpt).sublayers(1), GPTSublayers(gpt.h[1])
        assert kit.parallel == hand.parallel == parallel
        for part in ("norm1", "norm2", "attention", "mlp", "block"):
            assert torch.equal(getattr(kit, part)(x), getattr(hand, part)(x)), (parallel, part)


def test_embedding_and_unembedding_are_views_of_the_parameters() -> None:
    """Never copies: the tensors share the parameters' storage, and an in-place edit shows through."""
    tied, untied = _gpt(), _gpt(tied=False, head_bias=True)
    e, (u, b) = _kit(tied).embedding_matrix(), _kit(tied).unembedding()
    assert e.untyped_storage().data_ptr() == tied.wte.weight.untyped_storage().data_ptr()
    assert u.untyped_storage().data_ptr() == e.untyped_storage().data_ptr() and torch.equal(u, e.T) and b is None
    (u2, b2) = _kit(untied).unembedding()
    assert u2.untyped_storage().data_ptr() == untied.lm_head.weight.untyped_storage().data_ptr()
    assert b2 is not None and b2.untyped_storage().data_ptr() == untied.lm_head.bias.untyped_storage().data_ptr()
    with torch.no_grad():
        untied.lm_head.weight[3, 1] += 1.0
    assert u2[1, 3] == untied.lm_head.weight[3, 1]
    # a tensor path in nn.Linear's layout, with the bias named separately
    (u3, b3) = _kit(untied, unembedding="lm_head.weight", unembedding_bias="lm_head.bias").unembedding()
    assert torch.equal(u3, u2) and b3 is not None and torch.equal(b3, b2)


def test_a_missing_path_is_an_input_error_naming_it() -> None:
    gpt = _gpt()
    with pytest.raises(InputError, match=r"embedding='wte\.weigth': GPT\.wte \(Embedding\) has no attribute 'weigth'"):
        _kit(gpt, embedding="wte.weigth")
    with pytest.raises(InputError, match=r"blocks='layers': GPT \(GPT\) has no attribute 'layers'"):
        _kit(gpt, blocks="layers")
    with pytest.raises(InputError, match=r"h\.0 part='norm_1'"):
        _kit(gpt, sublayers=Layout("norm_1", "attn", "ln_2", "mlp"))
    with pytest.raises(InputError, match="give blocks= too"):
        _kit(gpt, blocks=None)
    with pytest.raises(InputError, match="not a list of modules"):
        _kit(gpt, blocks="ln_f", sublayers=None)
    assert resolve_path(gpt, "h.1.attn.c_attn") is gpt.h[1].attn.c_attn


def test_what_is_not_given_is_not_exposed() -> None:
    gpt = _gpt()
    bare = ModuleTarget(gpt, logits=gpt)
    assert bare.capabilities == {"train_step"}
    assert bare.vocab_size == 256 and bare.device == torch.device("cpu") and bare.dtype == torch.float32
    assert bare.tolerance == "float32" and bare.max_positions == 1 << 30
    for call, capability in ((bare.embedding_matrix, "embedding_matrix"), (bare.unembedding, "unembedding"),
                             (bare.tokenizer, "tokenizer"), (bare.config, "config"), (lambda: bare.sublayers(0),
                                                                                      "sublayers")):
        with pytest.raises(NotExposed) as err:
            call()
        assert err.value.capability == capability
    double = ModuleTarget(gpt.double(), logits=gpt)
    assert double.dtype == torch.float64 and double.tolerance == "float64"


def test_decode_through_cached_steps_and_train_step_through_sgd() -> None:
    from examples.tiny_gpt import Cache

    gpt, ids = _gpt(), _ids((2, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    target = _kit(gpt, cached_forward=lambda: functools.partial(gpt, cache=Cache(2)))
    for prefill in (1, 3, 9):
        got, want = target.decode(ids, prefill, mask), target.logits(ids, mask)
        assert_close(got[mask.bool()], want[mask.bool()], TOL, f"prefill {prefill}")
    before = {n: p.detach().clone() for n, p in gpt.named_parameters()}
    target.train_step(ids, _ids((2, 9), seed=1), lr=0.1)
    assert not gpt.training and not torch.equal(before["h.0.mlp.c_fc.weight"], gpt.h[0].mlp.c_fc.weight)
    frozen = _kit(gpt, logits=torch.no_grad()(gpt))
    with pytest.raises(NotExposed, match="no gradient"):
        frozen.train_step(ids, ids, lr=0.1)
    assert not gpt.training


def test_a_transformers_gpt2_through_attribute_paths() -> None:
    """A differently written module (HF's GPT-2: Conv1D weights, tuple outputs, keyword arguments): the kit's
    residual states are HF's hidden states, its sublayers the reference's, and the block claims pass on it."""
    pytest.importorskip("transformers")
    from reference.convert import from_hf
    from spec.targets.hf_presets import build_hf
    from spec.targets.hf_target import HFTarget
    from spec.targets.reference_target import ReferenceTarget

    model = build_hf("gpt2")

    def logits(ids: Tensor, mask: Tensor | None) -> Tensor:
        positions = None if mask is None else (mask.long().cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits

    kit = ModuleTarget(model, logits=logits, embedding="transformer.wte", unembedding="lm_head",
                       blocks="transformer.h", final_norm="transformer.ln_f", name="gpt2 through the kit",
                       sublayers=Layout("ln_1", "attn", "ln_2", "mlp"), max_positions=model.config.n_positions)
    hf, ref = HFTarget(model), ReferenceTarget(from_hf(model))
    ids = torch.randint(0, kit.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    for got, want in zip(kit.residual_states(ids, mask), hf.residual_states(ids, mask), strict=True):
        assert torch.equal(got, want)
    assert kit.unembedding()[0].untyped_storage().data_ptr() == model.lm_head.weight.untyped_storage().data_ptr()
    x = torch.randn(2, 5, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    for layer in range(model.config.n_layer):
        s, r = kit.sublayers(layer), ref.sublayers(layer)
        for part in ("norm1", "norm2", "attention", "mlp", "block"):
            assert_close(getattr(s, part)(x), getattr(r, part)(x), TOL, f"layer {layer}: {part}")
    ci = settings.get_profile("ci")
    load_all()
    # RES-1 without build: its half on the model's own blocks runs, the zeroed-projection half is skipped by name
    for cid, want in (("EMB-1", PASSED), ("OUT-1", PASSED), ("BLK-1", PASSED), ("RES-1", PARTLY)):
        result = run_claim(CATALOG[cid], kit, profile=ci, target_spec="gpt2-kit", profile_name="ci")
        assert result.status == want, (cid, result.status, result.detail)
