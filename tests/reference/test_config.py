"""ModelConfig: defaults, derived widths, validation of every field; and the named presets."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import PRESETS, ModelConfig, preset

BASE = {"vocab_size": 11, "d_model": 16, "n_layers": 1, "n_heads": 4}
NAN, INF = float("nan"), float("inf")


def make(**changes: object) -> ModelConfig:
    return ModelConfig(**{**BASE, **changes})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- defaults


def test_defaults_and_derived_properties() -> None:
    cfg = make()
    assert cfg.n_kv_heads is None and cfg.kv_heads == 4  # MHA by default
    assert cfg.d_head is None and cfg.head_dim == 4  # 16 / 4
    assert cfg.d_mlp is None and cfg.mlp_dim == 64  # 4 * 16
    assert cfg.rotary_fraction == 1.0 and cfg.rotary_dim == 4
    assert cfg.scale == 0.5  # 1 / sqrt(4)
    assert (cfg.positions, cfg.norm, cfg.mlp_activation) == ("learned", "layernorm", "gelu")
    assert cfg.tied_embeddings and not cfg.unembed_bias and not cfg.parallel_residual
    assert cfg.max_positions == 1024 and cfg.norm_eps == 1e-5 and cfg.rotary_theta == 10000.0


def test_explicit_fields_override_derived_properties() -> None:
    cfg = make(n_kv_heads=2, d_head=6, d_mlp=10, attn_scale=0.125, rotary_fraction=0.5)
    assert cfg.kv_heads == 2
    assert cfg.head_dim == 6  # explicit d_head need not equal d_model / n_heads
    assert cfg.mlp_dim == 10
    assert cfg.rotary_dim == 3  # int(6 * 0.5); odd is fine while positions != "rotary"
    assert cfg.scale == 0.125


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    n_heads=st.integers(1, 8),
    head_dim=st.integers(1, 16),
    group=st.sampled_from([1, 2, 4, 8]),
    fraction=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
)
def test_derived_properties_follow_their_formulas(n_heads: int, head_dim: int, group: int, fraction: float) -> None:
    d_model = n_heads * head_dim
    kv = n_heads // group if n_heads % group == 0 else None
    cfg = ModelConfig(vocab_size=3, d_model=d_model, n_layers=1, n_heads=n_heads, n_kv_heads=kv,
                      rotary_fraction=fraction)
    assert cfg.kv_heads == (n_heads if kv is None else kv)
    assert cfg.head_dim == head_dim
    assert cfg.mlp_dim == 4 * d_model
    assert cfg.rotary_dim == math.floor(head_dim * fraction)
    assert cfg.scale == pytest.approx(head_dim ** -0.5, rel=1e-15)


def test_config_is_frozen_and_with_revalidates() -> None:
    cfg = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 8  # type: ignore[misc]
    assert cfg.with_(n_heads=2).head_dim == 8
    assert cfg.d_model == 16  # the original is untouched
    with pytest.raises(ValueError, match=r"ModelConfig\.d_model"):
        cfg.with_(n_heads=3)  # 16 is not divisible by 3


# -------------------------------------------------------------------------- validation

INVALID: list[tuple[dict[str, object], str]] = [
    # _positive: required positive ints (bools and floats rejected too)
    *[({name: bad}, name) for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_positions")
      for bad in (0, -1, 2.0, True)],
    # optional positive ints
    *[({name: bad}, name) for name in ("n_kv_heads", "d_head", "d_mlp") for bad in (0, -3, 1.5, "2")],
    # choices
    ({"positions": "absolute"}, "positions"),
    ({"positions": "Rotary"}, "positions"),
    ({"norm": "batchnorm"}, "norm"),
    ({"mlp_activation": "tanh"}, "mlp_activation"),
    # KV heads must divide the query heads (including more KV heads than query heads)
    ({"n_kv_heads": 3}, "n_kv_heads"),
    ({"n_kv_heads": 8}, "n_kv_heads"),
    # d_model must split into heads unless d_head is given
    ({"d_model": 18}, "d_model"),
    # norm_eps finite and > 0
    *[({"norm_eps": bad}, "norm_eps") for bad in (0.0, -1e-5, NAN, INF)],
    # rotary_fraction in (0, 1]
    *[({"rotary_fraction": bad}, "rotary_fraction") for bad in (0.0, -0.5, 1.01, NAN)],
    # odd rotary width: d_head 4 * 0.75 = 3, and an explicit d_head of 6 * 0.5 = 3
    ({"positions": "rotary", "rotary_fraction": 0.75}, "rotary_fraction"),
    ({"positions": "rotary", "d_head": 6, "rotary_fraction": 0.5}, "rotary_fraction"),
    # rotary_theta finite and > 1
    *[({"rotary_theta": bad}, "rotary_theta") for bad in (1.0, 0.5, -2.0, NAN, INF)],
    # sinusoidal needs an even d_model (15 = 3 heads of width 5)
    ({"positions": "sinusoidal", "d_model": 15, "n_heads": 3}, "d_model"),
    # attn_scale finite and > 0 when given
    *[({"attn_scale": bad}, "attn_scale") for bad in (0.0, -1.0, NAN, INF)],
    # embedding_scale finite and > 0
    *[({"embedding_scale": bad}, "embedding_scale") for bad in (0.0, -2.0, NAN, INF)],
    # RMSNorm never has a bias
    ({"norm": "rmsnorm", "norm_bias": True}, "norm_bias"),
    # rotary width int(d_head * fraction) must be >= 2 with rotary positions: 4 * 0.01 = 0 (was accepted: no
    # positions at all) and 4 * 0.25 = 1
    ({"positions": "rotary", "rotary_fraction": 0.01}, "rotary_fraction"),
    ({"positions": "rotary", "rotary_fraction": 0.25}, "rotary_fraction"),
    # real numbers only (a string or None gave a raw TypeError from math.isfinite; True passed as 1)
    *[({name: bad}, name) for name in ("norm_eps", "rotary_theta", "rotary_fraction", "embedding_scale",
                                        "attn_scale") for bad in ("1.0", True)],
    *[({name: None}, name) for name in ("norm_eps", "rotary_theta", "rotary_fraction", "embedding_scale")],
]

BOOL_FIELDS = ("mlp_gated", "mlp_bias", "norm_bias", "rotary_interleaved", "attn_qkv_bias", "attn_out_bias",
               "parallel_residual", "embedding_norm", "tied_embeddings", "unembed_bias")


@pytest.mark.parametrize("field", BOOL_FIELDS)
@pytest.mark.parametrize("bad", ["False", "no", "", 0, 1, None, 1.0])
def test_boolean_fields_take_real_bools_only(field: str, bad: object) -> None:
    # Before: "False" and "no" were accepted and, being truthy, meant True.
    changes: dict[str, object] = {field: bad}
    if field == "norm_bias":
        changes["norm"] = "layernorm"
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field} must be True or False \(a bool\), got {bad!r}"):
        make(**changes)
    assert make(**{**changes, field: False}).__getattribute__(field) is False


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[f"{f}={c}" for c, f in INVALID])
def test_invalid_field_is_rejected_naming_it(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        make(**changes)


# Bug (reported): config.py line 66 accepts bools for the optional int fields, because
# isinstance(True, int) holds; _positive (line 134) rejects bools for the required ones.
# ModelConfig(..., n_kv_heads=True) builds with kv_heads == True.
@pytest.mark.parametrize("field", ["n_kv_heads", "d_head", "d_mlp"])
def test_bool_is_rejected_for_optional_int_fields(field: str) -> None:
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        make(**{field: True})


@pytest.mark.parametrize(
    "changes",
    [
        {"positions": "learned", "rotary_fraction": 0.75},  # odd rotary width is fine without rotary
        {"positions": "rotary", "rotary_fraction": 0.5},  # 4 * 0.5 = 2
        {"d_model": 18, "d_head": 4},  # explicit d_head lifts the divisibility rule
        {"positions": "learned", "d_model": 15, "n_heads": 3},  # odd d_model without sinusoids
        {"norm": "rmsnorm", "norm_bias": False},
        {"n_kv_heads": 1},
        {"n_kv_heads": 4},
        {"rotary_fraction": 1.0, "rotary_theta": 1.0001, "attn_scale": 1e-3, "embedding_scale": 1e3},
    ],
)
def test_valid_edge_cases_are_accepted(changes: dict[str, object]) -> None:
    cfg = make(**changes)
    for name, value in changes.items():
        assert getattr(cfg, name) == value


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_lookup_returns_the_table_entry(name: str) -> None:
    cfg = preset(name)
    assert cfg is PRESETS[name]
    assert isinstance(cfg, ModelConfig)
    assert cfg.with_() == cfg  # revalidates cleanly


def test_unknown_preset_lists_the_names() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'gpt3'.*gpt2-tiny"):
        preset("gpt3")


def test_presets_cover_the_wirings_they_claim() -> None:
    cfgs = PRESETS.values()
    assert {c.positions for c in cfgs} == {"learned", "sinusoidal", "rotary", "alibi", "none"}
    assert {c.norm for c in cfgs} == {"layernorm", "rmsnorm"}
    kv = {(c.n_heads, c.kv_heads) for c in cfgs}
    assert (4, 4) in kv and (4, 2) in kv and (4, 1) in kv  # MHA, GQA, MQA
    assert {c.tied_embeddings for c in cfgs} == {True, False}
    assert {c.mlp_gated for c in cfgs} == {True, False}
    assert {c.parallel_residual for c in cfgs} == {True, False}
    assert {c.rotary_interleaved for c in cfgs if c.scheme.rotates} == {True, False}
    assert PRESETS["gemma-tiny"].embedding_scale == pytest.approx(math.sqrt(32))
    assert PRESETS["bloom-tiny"].embedding_norm
