"""GPT-J (model_type "gptj").

Layout: separate bias-free q/k/v/out_proj Linears; one LayerNorm ``ln_1`` feeds both
attention and MLP in parallel (h + Attn(ln_1 h) + MLP(ln_1 h)), so it is copied into
both N1 and N2. Rotary is *interleaved*: coordinates (2i, 2i + 1) form a pair
(``rotate_every_two``), over the first ``rotary_dim`` coordinates of each head, with the
base 10000 fixed in HF's code (``create_sinusoidal_positions``). The MLP fc_in/fc_out
has biases; the ``lm_head`` Linear has a bias too (unembed_bias), and is untied unless
``tie_word_embeddings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from reference.config import ModelConfig
from reference.convert.common import Weights, activation, layer_norm, linear, unembedding, unsupported

GPTJ_ROTARY_BASE = 10000.0  # hard-coded in transformers' create_sinusoidal_positions


def config(hf_config: Any) -> ModelConfig:
    d, heads = hf_config.n_embd, hf_config.n_head
    dh = d // heads
    rotary_dim = hf_config.rotary_dim
    if rotary_dim is None:
        # HF then builds sin/cos over n_embd coordinates and applies them per head,
        # which is a per-head rotation only when there is a single head
        if heads != 1:
            raise unsupported("rotary_dim", None, "with more than one head HF rotates over n_embd coordinates "
                                                   "per head, which is not a per-head rotary embedding")
        rotary_dim = dh
    if not (isinstance(rotary_dim, int) and 2 <= rotary_dim <= dh and rotary_dim % 2 == 0
            and int(dh * (rotary_dim / dh)) == rotary_dim):
        raise unsupported("rotary_dim", rotary_dim, f"needs an even width in [2, head_dim={dh}]")
    return ModelConfig(
        vocab_size=hf_config.vocab_size,
        d_model=d,
        n_layers=hf_config.n_layer,
        n_heads=heads,
        d_mlp=hf_config.n_inner if hf_config.n_inner is not None else 4 * d,
        mlp_activation=activation(hf_config, "activation_function"),
        mlp_bias=True,
        norm="layernorm",
        norm_eps=hf_config.layer_norm_epsilon,
        positions="rotary",
        max_positions=hf_config.n_positions,
        rotary_theta=GPTJ_ROTARY_BASE,
        rotary_fraction=rotary_dim / dh,
        rotary_interleaved=True,
        attn_qkv_bias=False,
        attn_out_bias=False,
        parallel_residual=True,
        tied_embeddings=bool(hf_config.tie_word_embeddings),
        unembed_bias=True,
    )


def state_dict(hf_config: Any, hf_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cfg = config(hf_config)
    w = Weights(hf_state_dict, ignore=[r"attn\.(masked_)?bias$", r"attn\.embed_positions$"])  # buffers
    out: dict[str, Tensor] = {"embed.E": w("transformer.wte.weight")}
    for i in range(cfg.n_layers):
        p, q = f"transformer.h.{i}.", f"blocks.{i}."
        layer_norm(w, p + "ln_1", q + "N1", out)
        out[q + "N2.weight"], out[q + "N2.bias"] = out[q + "N1.weight"], out[q + "N1.bias"]  # one shared norm
        for name, hf in (("W_Q", "q_proj"), ("W_K", "k_proj"), ("W_V", "v_proj"), ("W_O", "out_proj")):
            out[f"{q}attn.{name}"] = linear(w(f"{p}attn.{hf}.weight"))
        out[q + "mlp.W_in"] = linear(w(p + "mlp.fc_in.weight"))
        out[q + "mlp.b_in"] = w(p + "mlp.fc_in.bias")
        out[q + "mlp.W_out"] = linear(w(p + "mlp.fc_out.weight"))
        out[q + "mlp.b_out"] = w(p + "mlp.fc_out.bias")
    layer_norm(w, "transformer.ln_f", "final_norm", out)
    unembedding(w, cfg, out, "lm_head.weight", bias="lm_head.bias")
    w.finish()
    return out
