"""Pieces every family converter shares: the error type, reading HF config fields,
taking weights out of an HF state dict, and the Llama-style layout.

Conventions (see reference/model.py for the reference's parameter names):

- An HF ``nn.Linear`` stores its weight as [out, in] and computes x @ W^T; the
  reference's weights act on the right, x @ W with W [in, out], so every Linear
  weight is transposed (``linear``). GPT-2's ``Conv1D`` already stores [in, out].
- Nothing is copied: every converted tensor is the HF tensor itself or a view of it
  (a transpose, a slice of a fused matrix), and ``from_hf`` hands those views to a model
  built on the meta device (``load_state_dict(assign=True)``), so checking a model of
  billions of parameters never holds its weights twice. The exceptions make a new tensor
  because no strided view can express them, each said where it happens: the per-head
  interleaved q/k/v rows of Bloom, GPT-NeoX and grouped Falcon (``per_head_rows``), and
  Gemma's (1 + w) norm gains (``shift_gain``, d_model numbers per norm).
- Weights are taken through ``Weights``, which remembers what was read, so a
  converter can insist that nothing in the checkpoint was left over (a leftover
  weight means a feature the converter does not know, e.g. q/k layer norms).
- Nothing is guessed from tensor shapes: which rows of a fused matrix are the
  queries, keys and values is written out per family from transformers' source.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from reference.config import Activation, ModelConfig


class UnsupportedConfig(ValueError):
    """The HF model uses a wiring the reference cannot express; the message names the field."""


def unsupported(field: str, value: object, why: str) -> UnsupportedConfig:
    """An UnsupportedConfig naming the HF config field, its value and the reason."""
    return UnsupportedConfig(f"config.{field}={value!r} is not supported: {why}")


# ------------------------------------------------------------------------------ config fields

# HF activation names whose function is *mathematically identical* to one of the reference's.
# Left out on purpose: gelu_fast (tanh constant truncated to 0.7978845608), quick_gelu
# (x * sigmoid(1.702 x)), gelu_10 (clipped), relu2, relu6, mish, ... : different functions.
HF_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",  # 0.5 x (1 + erf(x / sqrt 2))
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_accurate": "gelu_tanh",  # same formula with sqrt(2/pi) precomputed
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


def activation(hf_config: Any, field: str) -> Activation:
    """The reference activation for the HF activation named in ``hf_config.<field>``."""
    name = getattr(hf_config, field)
    if name not in HF_ACTIVATIONS:
        raise unsupported(field, name, f"only {sorted(HF_ACTIVATIONS)} equal one of the reference's "
                                       "activations exactly")
    return HF_ACTIVATIONS[name]


def rope(hf_config: Any, *, theta_fields: tuple[str, ...] = ("rope_theta",),
         fraction_fields: tuple[str, ...] = ("partial_rotary_factor",)) -> tuple[float, float]:
    """(rotary theta, rotated fraction of each head) from an HF config, transformers 4.x or 5.x.

    transformers 5 keeps them in ``config.rope_parameters`` ({"rope_type", "rope_theta",
    "partial_rotary_factor"}); 4.x had ``config.rope_theta`` (or a family's own name, e.g.
    GPT-NeoX's ``rotary_emb_base`` / ``rotary_pct``) and ``config.rope_scaling``. Only the
    plain ("default") rotary embedding is expressible: scaled variants change the
    frequencies or the cos/sin magnitudes.
    """
    params = getattr(hf_config, "rope_parameters", None)
    if params:
        if not isinstance(params, Mapping) or "rope_theta" not in params:
            raise unsupported("rope_parameters", params, "per-layer-type rope parameters are not expressible")
        rope_type = params.get("rope_type", params.get("type", "default"))
        field = "rope_parameters['rope_type']"
        theta = params["rope_theta"]
        fraction = params.get("partial_rotary_factor", _first(hf_config, fraction_fields, 1.0))
    else:
        scaling = getattr(hf_config, "rope_scaling", None)
        rope_type = (scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default")
        field = "rope_scaling"
        theta = _first(hf_config, theta_fields, 10000.0)
        fraction = _first(hf_config, fraction_fields, 1.0)
    if rope_type not in ("default", None):
        raise unsupported(field, rope_type, "only the default rotary embedding (no scaling) is expressible")
    return float(theta), float(fraction)


def _first(hf_config: Any, fields: Iterable[str], default: Any) -> Any:
    for name in fields:
        value = getattr(hf_config, name, None)
        if value is not None:
            return value
    return default


def check_rotary_width(head_dim: int, fraction: float, field: str) -> None:
    """HF rotates int(head_dim * fraction) coordinates in pairs; the reference needs that even and > 0."""
    width = int(head_dim * fraction)
    if width < 2 or width % 2 != 0:
        raise unsupported(field, fraction, f"it rotates {width} of the {head_dim} coordinates of each head; "
                                           "rotations need a positive even number")


def max_positions(hf_config: Any, field: str = "max_position_embeddings") -> int:
    """The context length, capped at the sliding window where one exists.

    HF hides key slot j from query slot i when i - j >= sliding_window (masking_utils'
    sliding_window_overlay). The reference has no window, but with max_positions <=
    sliding_window no query can ever be that far from a key, so capping the context
    keeps the model exact: longer inputs are refused (ValueError) rather than computed wrong.
    """
    limit = int(getattr(hf_config, field))
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        window = None  # Qwen2: the window applies only to layers typed "sliding_attention"
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise unsupported("sliding_window", window, "must be a positive int or None")
        limit = min(limit, window)
    return limit


def reject_true(hf_config: Any, *fields: str, why: str) -> None:
    """UnsupportedConfig if any of the named boolean fields is set."""
    for name in fields:
        value = getattr(hf_config, name, None)
        if value:
            raise unsupported(name, value, why)


# ------------------------------------------------------------------------------ weights


class Weights:
    """Reads an HF state dict by name and keeps track of what was read.

    ``finish`` raises UnsupportedConfig if weights were left over (a feature the
    converter does not know about, such as q/k layer norms or embedding projections).
    """

    def __init__(self, state_dict: Mapping[str, Tensor], ignore: Iterable[str] = ()) -> None:
        self.sd = state_dict
        self.used: set[str] = set()
        self.ignore = [re.compile(p) for p in ignore]

    def __call__(self, key: str) -> Tensor:
        if key not in self.sd:
            raise KeyError(f"HF state dict has no {key!r} (it has e.g. {sorted(self.sd)[:6]})")
        self.used.add(key)
        return self.sd[key]

    def has(self, key: str) -> bool:
        return key in self.sd

    def skip(self, key: str) -> None:
        """Mark a weight as deliberately unused (e.g. a tied lm_head)."""
        self.used.add(key)

    def finish(self) -> None:
        left = sorted(k for k in self.sd if k not in self.used and not any(p.search(k) for p in self.ignore))
        if left:
            raise UnsupportedConfig(f"HF state dict holds weights this converter does not map, so the "
                                    f"checkpoint uses a wiring the reference lacks: {left[:8]}")


def linear(w: Tensor) -> Tensor:
    """An HF nn.Linear weight [out, in] as the reference's right-acting [in, out]: a transposed view, no copy.

    Matrix products read a transposed operand in place (BLAS's transpose flag), exactly as
    F.linear reads HF's own [out, in] weight, so the view costs no speed.
    """
    return w.t()


def per_head_rows(w: Tensor, n_groups: int, group: int, start: int, count: int, head_dim: int) -> Tensor:
    """Rows of a fused projection laid out as n_groups blocks of ``group`` heads of head_dim rows.

    Returns, for every block, heads start .. start + count - 1, concatenated in block
    order: [n_groups * count * head_dim, ...]. Used for fused qkv layouts that interleave
    the query, key and value heads per head (Bloom, GPT-NeoX) or per KV group (Falcon).

    A view of ``w`` when the rows are one contiguous run (a single block, as Falcon-7B's
    multi-query layout, or every head of each block). Otherwise a copy, unavoidably: the
    rows come in n_groups runs of count * head_dim rows separated by gaps, and a strided
    tensor has one stride per axis, so no view can merge the runs into one row axis (the
    reference's W_Q is [d_model, n_heads * d_head]). Only this tensor is copied.
    """
    rest = w.shape[1:]
    blocks = w.reshape(n_groups, group, head_dim, *rest)[:, start:start + count]  # a view of a contiguous w
    if n_groups == 1 or count == group:
        return blocks.view(n_groups * count * head_dim, *rest)
    return blocks.reshape(n_groups * count * head_dim, *rest)  # the unavoidable copy described above


def shift_gain(w: Tensor, offset: float) -> Tensor:
    """A norm gain stored as w with the model computing (offset + w) (Gemma: offset 1), in w's dtype.

    The sum is formed in float32 (float64 for float64 weights), as HF Gemma computes it.
    With an offset this is a new tensor, unavoidably: the reference's gain is used as
    stored and no view adds a constant; it is d_model numbers per norm. Offset 0: w itself.
    """
    if offset == 0.0:
        return w
    work = torch.float64 if w.dtype == torch.float64 else torch.float32
    return (w.to(work) + offset).to(w.dtype)


def float32_round(x: float) -> float:
    """x rounded to float32 (the precision of an HF buffer made with torch.tensor(x))."""
    return float(torch.tensor(x, dtype=torch.float32))


# ------------------------------------------------------------------------------ Llama layout


def head_dim(hf_config: Any) -> int:
    """config.head_dim where the family has it, else hidden_size // num_attention_heads (as HF computes it)."""
    explicit = getattr(hf_config, "head_dim", None)
    return int(explicit) if explicit else hf_config.hidden_size // hf_config.num_attention_heads


def llama_like_config(hf_config: Any, *, qkv_bias: bool, out_bias: bool, mlp_bias: bool,
                      **changes: Any) -> ModelConfig:
    """The config of a Llama-style model: pre-RMSNorm, rotary (half-split), gated MLP, GQA."""
    dh = head_dim(hf_config)
    theta, fraction = rope(hf_config)
    check_rotary_width(dh, fraction, "rope_parameters['partial_rotary_factor']")
    fields: dict[str, Any] = dict(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads,
        n_kv_heads=hf_config.num_key_value_heads,
        d_head=dh,
        d_mlp=hf_config.intermediate_size,
        mlp_activation=activation(hf_config, "hidden_act"),
        mlp_gated=True,
        mlp_bias=mlp_bias,
        norm="rmsnorm",
        norm_eps=hf_config.rms_norm_eps,
        norm_bias=False,
        positions="rotary",
        max_positions=max_positions(hf_config),
        rotary_theta=theta,
        rotary_fraction=fraction,
        rotary_interleaved=False,
        attn_qkv_bias=qkv_bias,
        attn_out_bias=out_bias,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
        unembed_bias=False,
    )
    fields.update(changes)
    return ModelConfig(**fields)


Part = Callable[[Weights, str, ModelConfig], dict[str, Tensor]]


def llama_attention(w: Weights, p: str, cfg: ModelConfig) -> dict[str, Tensor]:
    """Separate q_proj, k_proj, v_proj, o_proj Linears under ``p`` (ending in 'self_attn.')."""
    out = {name: linear(w(f"{p}{hf}.weight")) for name, hf in
           (("W_Q", "q_proj"), ("W_K", "k_proj"), ("W_V", "v_proj"), ("W_O", "o_proj"))}
    if cfg.attn_qkv_bias:
        out.update(b_Q=w(f"{p}q_proj.bias"), b_K=w(f"{p}k_proj.bias"), b_V=w(f"{p}v_proj.bias"))
    if cfg.attn_out_bias:
        out["b_O"] = w(f"{p}o_proj.bias")
    return out


def llama_mlp(w: Weights, p: str, cfg: ModelConfig) -> dict[str, Tensor]:
    """down(act(gate(x)) * up(x)): gate_proj -> W_gate, up_proj -> W_in, down_proj -> W_out."""
    out = {"W_gate": linear(w(f"{p}gate_proj.weight")), "W_in": linear(w(f"{p}up_proj.weight")),
           "W_out": linear(w(f"{p}down_proj.weight"))}
    if cfg.mlp_bias:
        out.update(b_gate=w(f"{p}gate_proj.bias"), b_in=w(f"{p}up_proj.bias"), b_out=w(f"{p}down_proj.bias"))
    return out


def llama_like_state_dict(cfg: ModelConfig, sd: Mapping[str, Tensor], *, gain_offset: float = 0.0,
                          attention: Part = llama_attention, mlp: Part = llama_mlp) -> dict[str, Tensor]:
    """model.embed_tokens, model.layers.{i}.{input_layernorm, self_attn, post_attention_layernorm, mlp},
    model.norm, lm_head (absent or ignored when tied)."""
    w = Weights(sd, ignore=[r"rotary_emb\.inv_freq$"])
    out: dict[str, Tensor] = {"embed.E": w("model.embed_tokens.weight")}
    for i in range(cfg.n_layers):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        out[q + "N1.weight"] = shift_gain(w(p + "input_layernorm.weight"), gain_offset)
        out[q + "N2.weight"] = shift_gain(w(p + "post_attention_layernorm.weight"), gain_offset)
        out.update({q + "attn." + k: v for k, v in attention(w, p + "self_attn.", cfg).items()})
        out.update({q + "mlp." + k: v for k, v in mlp(w, p + "mlp.", cfg).items()})
    out["final_norm.weight"] = shift_gain(w("model.norm.weight"), gain_offset)
    unembedding(w, cfg, out, "lm_head.weight")
    w.finish()
    return out


def unembedding(w: Weights, cfg: ModelConfig, out: dict[str, Tensor], key: str, bias: str | None = None) -> None:
    """U from the lm_head Linear when untied; when tied, the lm_head copy (if present) is E and is skipped."""
    if cfg.tied_embeddings:
        w.skip(key)
    else:
        out["U"] = linear(w(key))
    if cfg.unembed_bias:
        assert bias is not None
        out["b_U"] = w(bias)


def layer_norm(w: Weights, hf: str, ref: str, out: dict[str, Tensor]) -> None:
    """A LayerNorm's weight and bias, HF name prefix ``hf`` -> reference prefix ``ref``."""
    out[ref + ".weight"] = w(hf + ".weight")
    out[ref + ".bias"] = w(hf + ".bias")

