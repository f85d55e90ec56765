"""TransformerLens's own implementation (``HookedTransformer``, the 3.x line) as a spec target.

TransformerLens 3.x computes the forward pass with its own components (einsum
attention over W_Q [n_heads, d_model, d_head], its own norms, rotary and ALiBi), so
it is a check nobody here wrote; the 4.x line wraps the HF modules and would not be.

- ``tlens:<preset>``: the reference preset's seeded weights (``reference.build(preset,
  seed=0)``) mapped into a ``HookedTransformerConfig`` and state dict (:func:`to_tlens`);
  the same weights as ``reference:<preset>``, so the two compute the same function.
- ``tlens:smollm2``: SmolLM2 through transformers' GGUF loader, handed to
  ``HookedTransformer.from_pretrained_no_processing(hf_model=...)`` (no LayerNorm folding
  or unembedding centring, which would shift logits). The GGUF-loaded config still
  carries ``quantization_config`` (TransformerLens refuses quantized checkpoints; the
  weights are already dequantized to float32) and no ``architectures``; a copy without
  the one and with the other is written to a local folder, which is registered as an
  allowed model name (TransformerLens only loads names on its list).

The way back, :func:`to_reference`, maps TransformerLens's weights into a reference
``Transformer`` without running TransformerLens, so REF-1 compares its forward pass with
the reference's on its own weights. Wirings TransformerLens cannot express (sinusoidal
or no positions, a scaled embedding, a gated MLP with a gate bias) raise
:class:`Unsupported`; a claim drawing such a config for ``build`` is reported "not exposed".
"""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

import reference
from reference.block import Block
from reference.config import ModelConfig
from reference.model import Transformer
from reference.presets import preset
from spec.target import Sublayers, Target, Tokenizer, sgd_step
from spec.tolerance import for_dtype

_ACT_TO_TL = {"gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu", "relu": "relu"}
_ACT_FROM_TL = {v: k for k, v in _ACT_TO_TL.items()} | {"gelu_pytorch_tanh": "gelu_tanh"}
_POS_TO_TL = {"learned": "standard", "rotary": "rotary", "alibi": "alibi"}


class Unsupported(ValueError):
    """A reference wiring HookedTransformer cannot express."""


def _version() -> str:
    from importlib.metadata import version

    return f"transformer-lens {version('transformer-lens')}"


# ------------------------------------------------------------------------------ configs both ways


def tl_config(cfg: ModelConfig, device: str | torch.device, dtype: torch.dtype) -> Any:
    """The HookedTransformerConfig of a reference ModelConfig; Unsupported names the field it cannot express."""
    from transformer_lens import HookedTransformerConfig

    if cfg.positions not in _POS_TO_TL:
        raise Unsupported(f"positions={cfg.positions!r}: HookedTransformer has learned, rotary and ALiBi only")
    if cfg.embedding_scale != 1.0:
        raise Unsupported("embedding_scale: HookedTransformer does not scale embedding rows")
    if cfg.mlp_gated and cfg.mlp_bias:
        raise Unsupported("mlp_gated with mlp_bias: HookedTransformer's gated MLP has no gate bias")
    return HookedTransformerConfig(
        d_model=cfg.d_model, d_head=cfg.head_dim, n_layers=cfg.n_layers, n_ctx=cfg.max_positions,
        n_heads=cfg.n_heads, d_vocab=cfg.vocab_size, d_mlp=cfg.mlp_dim,
        n_key_value_heads=cfg.kv_heads if cfg.kv_heads != cfg.n_heads else None,
        act_fn=_ACT_TO_TL[cfg.mlp_activation], gated_mlp=cfg.mlp_gated,
        normalization_type="RMS" if cfg.norm == "rmsnorm" else "LN", eps=cfg.norm_eps,
        positional_embedding_type=_POS_TO_TL[cfg.positions],
        rotary_dim=cfg.rotary_dim if cfg.scheme.rotates else None, rotary_base=cfg.rotary_theta,
        rotary_adjacent_pairs=cfg.rotary_interleaved, parallel_attn_mlp=cfg.parallel_residual,
        post_embedding_ln=cfg.embedding_norm, attn_scale=1.0 / cfg.scale, init_weights=False,
        default_prepend_bos=False, device=str(device), dtype=dtype)


def reference_config(tl_cfg: Any, has_biases: dict[str, bool], tied: bool = False) -> ModelConfig:
    """The reference ModelConfig of a HookedTransformerConfig (``has_biases``: which bias groups are nonzero;
    ``tied``: W_U equals W_E^T bit for bit, as in a tied model loaded into HookedTransformer, which keeps a copy)."""
    pos = {v: k for k, v in _POS_TO_TL.items()}.get(tl_cfg.positional_embedding_type)
    if pos is None or tl_cfg.act_fn not in _ACT_FROM_TL or tl_cfg.normalization_type not in ("LN", "RMS"):
        raise Unsupported(f"HookedTransformer with positions {tl_cfg.positional_embedding_type!r}, act_fn "
                          f"{tl_cfg.act_fn!r}, normalization {tl_cfg.normalization_type!r}")
    rms = tl_cfg.normalization_type == "RMS"
    rotary_dim = tl_cfg.rotary_dim or tl_cfg.d_head
    return ModelConfig(
        vocab_size=tl_cfg.d_vocab, d_model=tl_cfg.d_model, n_layers=tl_cfg.n_layers, n_heads=tl_cfg.n_heads,
        n_kv_heads=tl_cfg.n_key_value_heads, d_head=tl_cfg.d_head, d_mlp=tl_cfg.d_mlp,
        mlp_activation=_ACT_FROM_TL[tl_cfg.act_fn], mlp_gated=tl_cfg.gated_mlp,  # type: ignore[arg-type]
        mlp_bias=has_biases["mlp"], norm="rmsnorm" if rms else "layernorm", norm_eps=tl_cfg.eps,
        norm_bias=not rms, positions=pos, max_positions=tl_cfg.n_ctx,  # type: ignore[arg-type]
        rotary_theta=float(tl_cfg.rotary_base), rotary_fraction=rotary_dim / tl_cfg.d_head,
        rotary_interleaved=tl_cfg.rotary_adjacent_pairs, attn_qkv_bias=has_biases["qkv"],
        attn_out_bias=has_biases["out"], attn_scale=1.0 / float(tl_cfg.attn_scale),
        parallel_residual=tl_cfg.parallel_attn_mlp, embedding_norm=tl_cfg.post_embedding_ln,
        tied_embeddings=tied, unembed_bias=has_biases["unembed"])


# ------------------------------------------------------------------------------ weights both ways


def _heads(w: Tensor, n: int) -> Tensor:
    """[d_model, n * d_head] -> TransformerLens's [n, d_model, d_head]."""
    d = w.shape[0]
    return w.reshape(d, n, -1).permute(1, 0, 2)


def _unheads(w: Tensor) -> Tensor:
    """TransformerLens's [n, d_model, d_head] -> [d_model, n * d_head]."""
    n, d, dh = w.shape
    return w.permute(1, 0, 2).reshape(d, n * dh)


def _or_zeros(b: Tensor | None, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device) if b is None else b.detach()


def _kv(cfg: ModelConfig) -> str:
    """TransformerLens keeps grouped-query K/V weights under underscored names."""
    return "_" if cfg.kv_heads != cfg.n_heads else ""


def tl_state_dict(model: Transformer) -> dict[str, Tensor]:
    """The reference model's weights under HookedTransformer's names and shapes (zeros where it has no bias)."""
    cfg, E = model.cfg, model.E.detach()
    h, hkv, dh, d = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.d_model
    sd: dict[str, Tensor] = {"embed.W_E": E, "unembed.W_U": model.W_U.detach().clone(),
                             "unembed.b_U": _or_zeros(model.b_U, (cfg.vocab_size,), E)}
    if model.pos is not None:
        sd["pos_embed.W_pos"] = model.pos.P.detach()
    norms = {"ln_final": model.final_norm} | ({"embed.ln": model.embed_norm} if model.embed_norm is not None else {})
    for i, blk in enumerate(cast(list[Block], list(model.blocks))):
        p, a, m, kv = f"blocks.{i}.", blk.attn, blk.mlp, _kv(cfg)
        norms |= {p + "ln1": blk.N1, p + "ln2": blk.N2}
        sd |= {p + "attn.W_Q": _heads(a.W_Q.detach(), h), p + f"attn.{kv}W_K": _heads(a.W_K.detach(), hkv),
               p + f"attn.{kv}W_V": _heads(a.W_V.detach(), hkv), p + "attn.W_O": a.W_O.detach().reshape(h, dh, d),
               p + "attn.b_Q": _or_zeros(a.b_Q, (h * dh,), E).reshape(h, dh),
               p + f"attn.{kv}b_K": _or_zeros(a.b_K, (hkv * dh,), E).reshape(hkv, dh),
               p + f"attn.{kv}b_V": _or_zeros(a.b_V, (hkv * dh,), E).reshape(hkv, dh),
               p + "attn.b_O": _or_zeros(a.b_O, (d,), E), p + "mlp.W_in": m.W_in.detach(),
               p + "mlp.W_out": m.W_out.detach(), p + "mlp.b_in": _or_zeros(m.b_in, (cfg.mlp_dim,), E),
               p + "mlp.b_out": _or_zeros(m.b_out, (d,), E)}
        if m.W_gate is not None:
            sd[p + "mlp.W_gate"] = m.W_gate.detach()
    for name, norm in norms.items():
        sd[name + ".w"] = norm.weight.detach()
        if cfg.norm == "layernorm":
            sd[name + ".b"] = _or_zeros(norm.bias, (d,), E)
    return {k: v.clone() for k, v in sd.items()}


def to_tlens(model: Transformer) -> Any:
    """A HookedTransformer computing what ``model`` computes (same weights); Unsupported if it cannot."""
    from transformer_lens import HookedTransformer

    tl = HookedTransformer(tl_config(model.cfg, model.device, model.dtype))
    missing, unexpected = tl.load_state_dict(tl_state_dict(model), strict=False)
    params = {n for n, _ in tl.named_parameters()}
    if tl.cfg.positional_embedding_type != "standard":
        params.discard("pos_embed.W_pos")  # created for ALiBi too, but its forward never reads it
    left = sorted(set(missing) & params)
    if left or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing parameters {left}, unexpected {list(unexpected)}")
    return tl.to(model.device).eval()


def _nonzero(sd: dict[str, Tensor], suffixes: tuple[str, ...]) -> bool:
    return any(bool(v.any()) for k, v in sd.items() if k.endswith(suffixes))


def to_reference(tl: Any) -> Transformer:
    """A reference Transformer with HookedTransformer ``tl``'s weights, mapped without running ``tl``."""
    sd = {k: v.detach() for k, v in tl.state_dict().items()}
    biases = {"qkv": _nonzero(sd, ("b_Q", "b_K", "b_V")), "out": _nonzero(sd, ("attn.b_O",)),
              "mlp": _nonzero(sd, ("mlp.b_in", "mlp.b_out")), "unembed": _nonzero(sd, ("unembed.b_U",))}
    W_E = sd["embed.W_E"]
    cfg = reference_config(tl.cfg, biases, tied=bool(torch.equal(sd["unembed.W_U"], W_E.T)))
    model = Transformer(cfg, device=W_E.device, dtype=W_E.dtype)
    out: dict[str, Tensor] = {"embed.E": W_E} | ({} if cfg.tied_embeddings else {"U": sd["unembed.W_U"]})
    if cfg.unembed_bias:
        out["b_U"] = sd["unembed.b_U"]
    if cfg.scheme.learned:
        out["pos.P"] = sd["pos_embed.W_pos"]
    norms = {"final_norm": "ln_final"} | ({"embed_norm": "embed.ln"} if cfg.embedding_norm else {})
    for i in range(cfg.n_layers):
        p, r, kv = f"blocks.{i}.", f"blocks.{i}.", _kv(cfg)
        norms |= {r + "N1": p + "ln1", r + "N2": p + "ln2"}
        out |= {r + "attn.W_Q": _unheads(sd[p + "attn.W_Q"]), r + "attn.W_K": _unheads(sd[p + f"attn.{kv}W_K"]),
                r + "attn.W_V": _unheads(sd[p + f"attn.{kv}W_V"]), r + "attn.W_O": sd[p + "attn.W_O"].flatten(0, 1),
                r + "mlp.W_in": sd[p + "mlp.W_in"], r + "mlp.W_out": sd[p + "mlp.W_out"]}
        if cfg.mlp_gated:
            out[r + "mlp.W_gate"] = sd[p + "mlp.W_gate"]
        if cfg.attn_qkv_bias:
            out |= {r + "attn.b_Q": sd[p + "attn.b_Q"].flatten(), r + "attn.b_K": sd[p + f"attn.{kv}b_K"].flatten(),
                    r + "attn.b_V": sd[p + f"attn.{kv}b_V"].flatten()}
        if cfg.attn_out_bias:
            out[r + "attn.b_O"] = sd[p + "attn.b_O"]
        if cfg.mlp_bias:
            out |= {r + "mlp.b_in": sd[p + "mlp.b_in"], r + "mlp.b_out": sd[p + "mlp.b_out"]}
    for ref_name, tl_name in norms.items():
        out[ref_name + ".weight"] = sd[tl_name + ".w"]
        if cfg.norm == "layernorm":
            out[ref_name + ".bias"] = sd[tl_name + ".b"]
    model.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------ the target


@dataclass
class TLensSublayers:
    """Block ``layer`` of a HookedTransformer, part by part (its own causal mask and positions 0..T-1)."""

    blk: Any
    parallel: bool

    @torch.no_grad()
    def norm1(self, x: Tensor) -> Tensor:
        return self.blk.ln1(x)  # type: ignore[no-any-return]

    @torch.no_grad()
    def norm2(self, x: Tensor) -> Tensor:
        return self.blk.ln2(x)  # type: ignore[no-any-return]

    @torch.no_grad()
    def attention(self, x: Tensor) -> Tensor:
        return self.blk.attn(x, x, x)  # type: ignore[no-any-return]

    @torch.no_grad()
    def mlp(self, x: Tensor) -> Tensor:
        return self.blk.mlp(x)  # type: ignore[no-any-return]

    @torch.no_grad()
    def block(self, x: Tensor) -> Tensor:
        return self.blk(x)  # type: ignore[no-any-return]


class TLensTarget(Target):
    """A HookedTransformer; residual states, attention and queries/keys are read from its hook points."""

    def __init__(self, model: Any, name: str, tokenizer: Tokenizer | None = None, trained: bool = False) -> None:
        self.model = model.eval()
        self.name, self.version = name, _version()
        self._tokenizer = tokenizer
        self.vocab_size, self.max_positions = int(model.cfg.d_vocab), int(model.cfg.n_ctx)
        p = model.embed.W_E
        self.device, self.dtype = p.device, p.dtype
        self.tolerance = for_dtype(self.dtype).name
        self.trained = trained  # type: ignore[misc]

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        self.check_length(ids.shape[-1])
        mask = None if attention_mask is None else attention_mask.long()
        return self.model(ids, return_type="logits", attention_mask=mask)  # type: ignore[no-any-return]

    def _cache(self, ids: Tensor, attention_mask: Tensor | None, names: list[str]) -> dict[str, Tensor]:
        self.check_length(ids.shape[-1])
        mask = None if attention_mask is None else attention_mask.long()
        with torch.no_grad():
            _, cache = self.model.run_with_cache(ids, attention_mask=mask, names_filter=lambda n: n in names)
        return {n: cache[n] for n in names}

    def embedding_matrix(self) -> Tensor:
        return self.model.embed.W_E.detach()  # type: ignore[no-any-return]

    def embed(self, ids: Tensor) -> Tensor:
        return self._cache(ids, None, ["blocks.0.hook_resid_pre"])["blocks.0.hook_resid_pre"]

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        return self.model.unembed.W_U.detach(), self.model.unembed.b_U.detach()

    @torch.no_grad()
    def final_norm(self, h: Tensor) -> Tensor:
        return self.model.ln_final(h)  # type: ignore[no-any-return]

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        n = self.model.cfg.n_layers
        names = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
        got = self._cache(ids, attention_mask, names)
        return tuple(got[k] for k in names)

    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        names = [f"blocks.{i}.attn.hook_pattern" for i in range(self.model.cfg.n_layers)]
        got = self._cache(ids, attention_mask, names)
        return tuple(got[k] for k in names)  # each [batch, heads, q, k]

    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        rot = "rot_" if self.model.cfg.positional_embedding_type == "rotary" else ""
        q_name, k_name = f"blocks.{layer}.attn.hook_{rot}q", f"blocks.{layer}.attn.hook_{rot}k"
        got = self._cache(ids, None, [q_name, k_name])
        return got[q_name].transpose(1, 2), got[k_name].transpose(1, 2)  # [batch, seq, heads, d_head] -> [b, h, s, dh]

    def sublayers(self, layer: int) -> Sublayers:
        return TLensSublayers(self.model.blocks[layer], bool(self.model.cfg.parallel_attn_mlp))

    @torch.no_grad()
    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        """TransformerLens's own KV cache (HookedTransformerKeyValueCache), which also keeps the mask."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        self.check_length(ids.shape[-1])
        cache = TransformerLensKeyValueCache.init_cache(self.model.cfg, self.device, ids.shape[0])
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
        out = [self.model(ids[:, :prefill], attention_mask=mask[:, :prefill], past_kv_cache=cache)]
        for t in range(prefill, ids.shape[1]):
            out.append(self.model(ids[:, t:t + 1], attention_mask=mask[:, t:t + 1], past_kv_cache=cache))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        """HookedTransformer.generate, greedy, through its own KV cache; it infers padding from a tokenizer's pad
        token and takes no mask for token input, so a padded batch is not exposed."""
        from spec.target import NotExposed

        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise NotExposed("generate", "HookedTransformer.generate takes no attention mask for token input")
        self.check_length(ids.shape[-1] + max_new_tokens)
        return self.model.generate(ids, max_new_tokens=max_new_tokens, stop_at_eos=False,  # type: ignore[no-any-return]
                                   do_sample=False, use_past_kv_cache=True, verbose=False, return_type="tokens")

    def config(self) -> ModelConfig:
        return to_reference(self.model).cfg

    def build(self, config: ModelConfig, seed: int = 0) -> TLensTarget:
        """The reference's seeded weights for ``config`` in a HookedTransformer; a wiring it cannot express makes
        the claim 'not exposed' (never passed), naming the field."""
        from spec.target import NotExposed

        model = reference.build(config, seed=seed, device=self.device, dtype=self.dtype)
        try:
            return TLensTarget(to_tlens(model), name=f"{self.name}[built]")
        except Unsupported as exc:
            raise NotExposed("build", str(exc)) from None

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        sgd_step(self.model, lambda: self.model(ids, return_type="logits"), targets, lr)

    def tokenizer(self) -> Tokenizer:
        from spec.target import NotExposed

        if self._tokenizer is None:
            raise NotExposed("tokenizer", "a model built from a reference preset has no tokenizer of its own")
        return self._tokenizer

    def reference_model(self) -> Transformer:
        return to_reference(self.model)

    @property
    def capabilities(self) -> frozenset[str]:
        have = set(super().capabilities)
        if self._tokenizer is None:
            have.discard("tokenizer")
        return frozenset(have)


# ------------------------------------------------------------------------------ loading


def from_preset(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> TLensTarget:
    """``tlens:<preset>``: the same seeded weights as ``reference:<preset>`` in a HookedTransformer."""
    try:
        tl = to_tlens(reference.build(preset(name), seed=0, device=device, dtype=dtype))
    except Unsupported as exc:
        raise ValueError(f"target tlens:{name}: {exc}") from None
    return TLensTarget(tl, name=f"tlens:{name}")


def _local_config_dir(hf_model: Any) -> Path:
    """A folder holding the GGUF-loaded config as config.json, minus quantization_config, with architectures."""
    cfg = hf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["architectures"] = [type(hf_model).__name__]
    folder = Path(tempfile.mkdtemp(prefix="next-token-spec-tlens-"))
    (folder / "config.json").write_text(json.dumps(cfg, default=str), encoding="utf-8")
    return folder


@functools.cache
def load_smollm2(device: str = "cpu", dtype: torch.dtype = torch.float32) -> TLensTarget:
    """``tlens:smollm2``: HookedTransformer from transformers' dequantized GGUF model, weights unprocessed."""
    from transformer_lens import HookedTransformer, loading_from_pretrained
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spec.targets import smollm2
    from spec.targets.smollm2 import hf_tokenizer, locate_gguf
    from spec.targets.tokenizers import HFTokenizer

    path = locate_gguf()  # a model of its own: smollm2:hf's keeps its config untouched
    with smollm2.gguf_alone(path) as alone:  # the configuration from the GGUF, never from a file planted beside it
        hf_model = AutoModelForCausalLM.from_pretrained(str(alone.parent), gguf_file=alone.name, dtype=dtype)
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    folder = _local_config_dir(hf_model)
    if str(folder) not in loading_from_pretrained.OFFICIAL_MODEL_NAMES:
        loading_from_pretrained.OFFICIAL_MODEL_NAMES.append(str(folder))
    # TransformerLens reloads the tokenizer by its name_or_path (AutoTokenizer.from_pretrained(..., add_bos_token=
    # True)); the GGUF's own folder is gone by then and holds no tokenizer files. So the GGUF's tokenizer is saved
    # into this private folder and loaded from there: the same tokenizer, under a path that can be reloaded.
    hf_tokenizer(path).save_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    tl = HookedTransformer.from_pretrained_no_processing(str(folder), hf_model=hf_model, tokenizer=tok,
                                                         device=device, dtype=dtype, default_prepend_bos=False)
    target = TLensTarget(tl, name="tlens:smollm2", tokenizer=HFTokenizer(tok), trained=True)
    target.max_examples = smollm2.MAX_EXAMPLES  # the same model size and budget as the smollm2 targets
    target.realistic_examples = smollm2.REALISTIC_EXAMPLES
    if dtype == torch.float32:
        target.tolerance = "float32-deep"  # spec.tolerance: measured rounding of a 30-layer model
    return target


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``tlens`` kind: ``tlens:<reference preset>`` or ``tlens:smollm2``."""
    if rest == "smollm2":
        return load_smollm2(device, dtype)
    if not rest:
        raise ValueError("target tlens: name a reference preset (tlens:llama-tiny) or tlens:smollm2")
    return from_preset(rest, device, dtype)
