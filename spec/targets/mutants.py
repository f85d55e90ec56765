"""The mutant zoo: reference models with one realistic bug each, as spec targets (``mutant:<name>``).

(The same bug classes in HuggingFace models, ``mutant:hf-...``, are in spec.targets.hf_mutants; ``MUTANTS``
below holds both. Each mutant's ``missing`` says what an opaque target, spec.targets.opaque, lacks to show it.)

Each mutant is the reference with one stage replaced by a broken version of it (reference.stages: a
function of the stage's signature, ``Stages(weights=_softmax_over_queries)``), the way real
implementations go wrong: a KV-cache offset counted one too far, left padding that shifts positions,
a rotary layout that does not match the weights, grouped-query heads tiled where they should be
interleaved, a sampler that ignores its seed, and so on (the catalog ``MUTANTS`` below says which
bug and where it was seen). The two tied-embedding bugs are a model whose read-out matrix is not E^T
(``model_cls``). No mutant holds a copy of the reference's code.

How a bug is put in, so that every claim sees it the same way:

- the model: a built reference ``Transformer`` is given the mutant's stages (``Transformer.use_stages``),
  in place. The target runs that model for logits, residual states, attention weights, sublayers,
  cached decoding and generation alike, and ``build`` gives new models the same bug. Mutant models run
  the reference's explicit attention path, as the zoo always has (a replaced stage that torch's fused
  attention would skip sends any model down that path by itself, ``Stages.fusable``; the others would
  compute the same on the fused path up to float32 rounding). Nothing is patched process-wide: the bug
  lives in the instances.
- the sampler: ``softmax``, ``filtered_probabilities``, ``sample`` and ``generate`` are the model's
  stages (spec.targets.reference_target).
- ``reference_model()`` is the converter view: a plain reference ``Transformer`` holding the same
  weight tensors (shared storage, so weight edits reach the mutant) and running the reference's own
  stages. That is what a converter from a real implementation gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import reference
from reference.attention import explicit_attention, scores_to_weights, visibility_mask
from reference.cache import KVCache
from reference.config import ModelConfig
from reference.embedding import embed
from reference.mlp import MLP, position_wise
from reference.model import Transformer
from reference.norms import rms_norm
from reference.positions import apply_rotary
from reference.stages import REFERENCE, Stages
from reference.unembedding import unembed
from reference.validation import check_logits, check_temperature, check_top_k, check_top_p
from spec.target import Target
from spec.targets import hf_mutants
from spec.targets.hf_mutants import HF_ZOO, HFMutant
from spec.targets.reference_target import ReferenceTarget


# ============================================================================================ the target
@dataclass(frozen=True)
class Mutant:
    """One entry of the zoo: a named bug, where it is seen, and the stage that carries it."""

    name: str
    bug_class: str  # the class of issue #5 it reproduces
    description: str  # the real-world bug, one paragraph
    seen_in: str  # a public report of it (URL), or "" where none was found
    preset: str  # the reference preset that makes the bug reachable
    stages: Stages = REFERENCE  # the reference's stages with one replaced
    model_cls: type[Transformer] = Transformer  # a Transformer subclass, for a bug in the model's own matrices
    # What the catalog would have to observe to catch this bug without the converter (REF-1) and without config and
    # build: one sentence naming the missing observation, printed in the kill matrix for a mutant killed only by
    # REF-1 or not killed as an opaque target (spec.targets.opaque). "" where what an opaque target still exposes
    # shows the bug: then the opaque run must kill it (tests/spec_meta/test_zoo.py).
    missing: str = ""


def break_model(model: Transformer, mutant: Mutant) -> Transformer:
    """Turn a built reference model into the mutant's, in place (same weights, one stage broken)."""
    if mutant.model_cls is not Transformer:
        model.__class__ = mutant.model_cls
    model.use_stages(mutant.stages)
    model.attention_impl = "explicit"  # as the zoo always ran (its kill matrix was measured on this path)
    prepare = getattr(model, "prepare", None)
    if prepare is not None:  # the tied-embedding mutants make their read-out matrix here
        prepare()
    return model


def converter_view(model: Transformer) -> Transformer:
    """A plain reference Transformer over the same weight tensors (what a converter would give REF-1)."""
    view = Transformer(model.cfg, device="meta", dtype=model.dtype)
    own = model.state_dict()
    view.load_state_dict({name: own[name] for name in view.state_dict()}, strict=True, assign=True)
    return view.eval()


class MutantTarget(ReferenceTarget):
    """A reference target whose model (and so its sampler) carries one mutant's bug."""

    def __init__(self, mutant: Mutant, model: Transformer, name: str | None = None) -> None:
        self.mutant = mutant
        self.stages = mutant.stages
        broken = break_model(model, mutant)
        super().__init__(broken, name=name or f"mutant:{mutant.name}")
        self._view = converter_view(broken)

    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        # greedy never draws, but a broken sampler may: give it a seeded generator to draw with
        unused = torch.Generator(device=ids.device).manual_seed(0)
        return reference.generate(self.model, ids, max_new_tokens, attention_mask=attention_mask, generator=unused)

    def build(self, config: ModelConfig, seed: int = 0) -> MutantTarget:
        model = reference.build(config, seed=seed, device=self.device, dtype=self.dtype)
        return MutantTarget(self.mutant, model, name=f"{self.name}[built]")

    def reference_model(self) -> Transformer:
        return self._view


# ============================================================================================ broken stages
def _work(logits: Tensor) -> Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


class OffByOneCache(KVCache):
    """Advances its position counter one too far on every forward (it also counts the token about to come)."""

    def advance(self, mask: Tensor) -> None:
        super().advance(mask)
        self.next_position += 1


def _positions_ignoring_padding(real: Tensor, offset: Tensor, past: int) -> Tensor:
    """Positions are slot indices past, past + 1, …: padding is counted as if it were text."""
    b, t = real.shape
    return torch.arange(past, past + t, device=real.device).expand(b, t)


def _swapped_pairing(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
    """Rotates in the other layout than the weights were trained for (halves for GPT-J weights and vice versa)."""
    return apply_rotary(x, cos, sin, not interleaved)


def _tiled_kv(x: Tensor, n_rep: int) -> Tensor:
    """K/V heads tiled [0, 1, 0, 1] where query heads expect them interleaved [0, 0, 1, 1]."""
    return x if n_rep == 1 else x.repeat(1, n_rep, 1, 1)


def _scale_none(cfg: ModelConfig) -> float:
    return 1.0


def _scale_one_over_d(cfg: ModelConfig) -> float:
    return 1.0 / cfg.head_dim


def _scale_d_model(cfg: ModelConfig) -> float:
    return 1.0 / math.sqrt(cfg.d_model)


def _see_next(key_mask: Tensor, q_len: int, past: int) -> Tensor:
    """The causal mask shifted by one: each query also sees the key right after it."""
    k_len = key_mask.shape[1]
    q_slot = torch.arange(past, past + q_len, device=key_mask.device)[:, None]
    k_slot = torch.arange(k_len, device=key_mask.device)[None, :]
    return ((k_slot <= q_slot + 1)[None] & key_mask[:, None, :])[:, None] | (k_slot == q_slot)[None, None]


def _mask_from_lengths(key_mask: Tensor, q_len: int, past: int) -> Tensor:
    """The key mask rebuilt from each row's count of real tokens (arange < length): padding assumed on the right."""
    lengths = key_mask.sum(dim=-1, keepdim=True)  # [batch, 1]
    right = torch.arange(key_mask.shape[1], device=key_mask.device)[None] < lengths
    return visibility_mask(right, q_len, past)


def _softmax_over_queries(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Normalises each key's column over the queries (dim=-2) instead of each query's row over the keys."""
    scores = scores.float() if scores.dtype != torch.float64 else scores
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-2)


def _bf16_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """The attention softmax in bfloat16: scores rounded to bf16, softmax in bf16, the weights cast back."""
    low = scores.bfloat16()
    if mask is not None:
        low = low.masked_fill(~mask, float("-inf"))
    return torch.softmax(low, dim=-1).to(scores.dtype)


def _unstable_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """exp(scores) / sum exp(scores) in float32 without subtracting the row maximum: exp overflows above 88."""
    e = scores.float().exp()
    if mask is not None:
        e = e.masked_fill(~mask, 0.0)
    return e / e.sum(dim=-1, keepdim=True)


def packed_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, bias: Tensor | None = None,
                     weights: Callable[[Tensor, Tensor | None], Tensor] = scores_to_weights) -> tuple[Tensor, Tensor]:
    """The batch packed into one sequence, causal over the concatenation: row r also sees rows < r.

    Row r's queries see their own row as the mask says and every key of an earlier row that
    row's last query sees. Returns each row's output and its own block of the weights
    (which then no longer sum to 1).
    """
    assert mask is not None, "the explicit path always passes a mask"
    b, h, tq, d = q.shape
    tk = k.shape[2]

    def pack(x: Tensor) -> Tensor:  # [b, h, t, d] -> [1, h, b * t, d]
        return x.transpose(0, 1).reshape(1, h, b * x.shape[2], d)

    rows = torch.arange(b, device=q.device)
    seen = mask[:, 0, -1]  # [b, tk]: the keys each row's last query sees
    earlier = rows[None, :] < rows[:, None]  # [b, b]: key row before query row
    blocks = (earlier[:, None, :, None] & seen[None, None]).expand(b, tq, b, tk).clone()  # [b, tq, b, tk]
    blocks[rows, :, rows] = mask[:, 0]  # own row: the ordinary mask
    packed_bias = None
    if bias is not None:  # ALiBi within a row only
        packed_bias = torch.zeros(h, b, tq, b, tk, dtype=bias.dtype, device=bias.device)
        packed_bias[:, rows, :, rows] = bias
        packed_bias = packed_bias.reshape(1, h, b * tq, b * tk)
    out, w = explicit_attention(pack(q), pack(k), pack(v), blocks.reshape(1, 1, b * tq, b * tk), scale,
                                packed_bias, weights)
    own = w.reshape(h, b, tq, b, tk)[:, rows, :, rows]  # [b, h, tq, tk]
    return out.reshape(h, b, tq, d).transpose(0, 1), own


def _stream_replaced(h: Tensor, a: Tensor) -> Tensor:
    """The attention output replaces the residual stream instead of being added to it."""
    return a


def _dropout_residual(h: Tensor, a: Tensor) -> Tensor:
    """Residual dropout (p = 0.1) on the attention output that stays on at inference."""
    return h + F.dropout(a, p=0.1, training=True)


def _uncentred_layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """A LayerNorm that divides by the root mean square without subtracting the mean first."""
    out = rms_norm(x, weight, eps)
    return out if bias is None else out + bias


def _sequence_mixing_mlp(m: MLP, x: Tensor) -> Tensor:
    """Centres its input over the sequence axis (dim=1) where the feature axis was meant."""
    return position_wise(m, x - x.mean(dim=1, keepdim=True))


def _gate_swapped(act: Callable[[Tensor], Tensor], gate: Tensor, up: Tensor) -> Tensor:
    """A gated MLP with its gate and up projections in each other's place: act(x W_in) * (x W_gate)."""
    return act(up) * gate


def _embed_off_by_one(ids: Tensor, E: Tensor, scale: float) -> Tensor:
    """Looks up row id - 1 (a table read as if IDs were 1-based); id 0 silently wraps to the last row."""
    return embed(ids - 1, E, scale)


def _skip_final_norm(norm: nn.Module, h: Tensor) -> Tensor:
    """The final norm module exists (and is loaded) but is never called: h goes to the unembedding as it is."""
    return h


def _last_by_count(h: Tensor, mask: Tensor) -> Tensor:
    """Reads the output at index (number of real tokens - 1): right for right padding, wrong for left."""
    idx = mask.long().sum(dim=-1) - 1  # [batch]
    return h[torch.arange(h.shape[0], device=h.device), idx]


def _no_bias(h: Tensor, U: Tensor, b: Tensor | None) -> Tensor:
    """The output projection without its bias."""
    return unembed(h, U)


def _half_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """exp(z / T) / sum exp(z / T) in float16 without subtracting the maximum: exp overflows above z ~ 11."""
    if temperature == 0:
        return reference.softmax(logits, 0.0)
    e = torch.exp((logits / temperature).half())
    return (e / e.sum(dim=-1, keepdim=True)).to(_work(logits).dtype)


def _divide_unshifted(z: Tensor, t: float) -> Tensor:
    """z / T as it stands, the maximum not subtracted first (what a softmax that exponentiates z directly is fed)."""
    return z / t


def _temperature_after_top_p(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                             top_p: float | None = None, *, stages: Stages | None = None) -> Tensor:
    """Top-k and top-p cut the untempered distribution; the temperature only reshapes what is left."""
    s = stages or REFERENCE
    check_logits(logits)
    t = check_temperature(temperature)
    k, p = check_top_k(top_k, logits.shape[-1]), check_top_p(top_p)
    if t == 0.0:
        return s.softmax(logits, 0.0)
    z = _work(logits)
    if k is not None:
        z = s.top_k(z, k)
    if p is not None:
        z = s.top_p(z, p)
    return s.softmax(z / t, 1.0)


def _divide_by_t_softmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """softmax(z / T) with no special case for T = 0: z / 0 is ±inf or NaN."""
    return torch.softmax(_work(logits) / temperature, dim=-1)


def _divide_by_t_filtered(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None, *, stages: Stages | None = None) -> Tensor:
    """Temperature, top-k, top-p without the T = 0 branch."""
    s = stages or REFERENCE
    z = _work(logits) / temperature
    if top_k is not None:
        z = s.top_k(z, top_k)
    if top_p is not None:
        z = s.top_p(z, top_p)
    return torch.softmax(z, dim=-1)


def _divide_by_t_sample(logits: Tensor, generator: torch.Generator | None, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None, *,
                        stages: Stages | None = None) -> Tensor:
    """Always draws, at T = 0 too (from whatever z / 0 gave)."""
    s = stages or REFERENCE
    return s.draw(s.filtered(logits, temperature, top_k, top_p, stages=s), generator)


def top_p_below(logits: Tensor, p: float) -> Tensor:
    """Keeps the largest top-ranked set whose mass stays below p (plus the top token)."""
    if p >= 1.0:
        return logits
    sorted_p, order = torch.sort(torch.softmax(logits, -1), dim=-1, descending=True, stable=True)
    keep_sorted = torch.cumsum(sorted_p, dim=-1) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def top_k_plus_one(logits: Tensor, k: int) -> Tensor:
    """Masks the sorted positions after index k where positions from index k on were meant: k + 1 tokens survive."""
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices
    position = torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)
    remove_sorted = position > k  # the off-by-one: >= k keeps exactly k
    remove = torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def _top_k_not_renormalised(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None, *, stages: Stages | None = None) -> Tensor:
    """Zeroes the filtered-out tokens of the full distribution and returns the rest as they were (sum < 1)."""
    s = stages or REFERENCE
    if temperature == 0:
        return s.softmax(logits, 0.0)
    z = _work(logits) / temperature
    full = torch.softmax(z, dim=-1)
    if top_k is not None:
        z = s.top_k(z, top_k)
    if top_p is not None:
        z = s.top_p(z, top_p)
    return torch.where(torch.isfinite(z), full, torch.zeros_like(full))


def _global_rng_draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Draws from torch's global generator; the one passed in is ignored."""
    return torch.multinomial(probs, 1).squeeze(-1)


def _greedy_max_value(logits: Tensor) -> Tensor:
    """torch.max's (values, indices) unpacked in the wrong order: the top probability, truncated, becomes the ID."""
    token, _ = torch.max(torch.softmax(_work(logits), dim=-1), dim=-1)
    return token.long()


# ============================================================================================ broken read-outs
class TiedCopyModel(Transformer):
    """A tied model whose output matrix is a copy of E^T taken at load time: equal bit for bit until it is trained,
    then E and U move apart (each gets only its own gradient)."""

    def prepare(self) -> None:
        if self.cfg.tied_embeddings:
            self.U_copy = nn.Parameter(self.embed.E.detach().T.clone())  # same values and strides as E.T

    @property
    def W_U(self) -> Tensor:
        return self.U_copy if self.cfg.tied_embeddings else super().W_U


class LostTieModel(Transformer):
    """A tied model whose output matrix was never tied: a freshly initialised U replaces E^T."""

    def prepare(self) -> None:
        if not self.cfg.tied_embeddings:
            return
        g = torch.Generator().manual_seed(1)
        fresh = torch.randn(self.cfg.d_model, self.cfg.vocab_size, generator=g, dtype=torch.float64)
        self.U_lost = nn.Parameter((fresh / math.sqrt(self.cfg.d_model)).to(device=self.device, dtype=self.dtype))

    @property
    def W_U(self) -> Tensor:
        return self.U_lost if self.cfg.tied_embeddings else super().W_U


# ============================================================================================ the zoo
_HF = "https://github.com/huggingface/transformers"
_ZOO: list[Mutant] = [
    Mutant("cache-offset-off-by-one", "KV cache position offset wrong",
           "The cache's position counter moves one slot too far on every step (it counts the token about to be "
           "sampled as well as those just fed), so each decoded token is rotated as if it stood further along "
           "than it does. Prefill is right; only cached decoding drifts. onnxruntime-genai's varlen decoder "
           "started each decode step's positions one past the true length in the same way.",
           "https://github.com/microsoft/onnxruntime-genai/pull/2354", "llama-tiny",
           Stages(cache=OffByOneCache)),
    Mutant("left-pad-positions", "left padding with positions not adjusted",
           "Positions are the slot indices 0..T-1 whatever the attention mask says, so in a left-padded batch a "
           "prompt's tokens get positions shifted by its padding. Invisible to rotary models (only offsets "
           "matter) but not to learned absolute positions: GPT-2 batched with left padding mispredicts every "
           "padded prompt unless position_ids are derived from the mask.",
           f"{_HF}/issues/21080", "gpt2-tiny", Stages(positions=_positions_ignoring_padding)),
    Mutant("rotary-pairing-swapped", "rotary pairing interleaved vs half-split mismatched with the weights",
           "The weights were trained with GPT-J's interleaved rotary pairs (2i, 2i + 1) but the code rotates "
           "half-split pairs (i, i + r/2), as when Meta's Llama checkpoints are run by GPT-NeoX-style code "
           "without the converter's permutation of W_Q and W_K. Both layouts are valid rotations, so only a "
           "comparison with the weights' own convention can tell.",
           f"{_HF}/issues/25199", "gptj-tiny", Stages(rotate=_swapped_pairing),
           missing="which pairing the weights were trained for: both layouts are rotations, so lengths and relative "
                   "scores hold (POS-3) and every other claim sees a consistent model; only the weights' own "
                   "convention (the converter, REF-1) tells them apart"),
    Mutant("gqa-tiled-heads", "grouped-query heads repeated in the wrong order",
           "Key/value heads are tiled (query head h reads K/V head h mod n_kv) where the weights expect "
           "repeat_interleave (head h reads h // group). ONNX's Attention operator used tile until it was "
           "changed to match torch.",
           "https://github.com/onnx/onnx/pull/7274", "llama-tiny", Stages(repeat_kv=_tiled_kv)),
    Mutant("attn-scale-none", "attention scale wrong (none)",
           "The scores q . k are not scaled at all, so every softmax in attention is too sharp by sqrt(d_head). "
           "Reviewers of an MLC-LLM Gemma port flagged a hardcoded scale of 1.0 for exactly this reason.",
           "https://github.com/mlc-ai/mlc-llm/pull/3485", "llama-tiny", Stages(scale=_scale_none)),
    Mutant("attn-scale-1-over-d", "attention scale wrong (1/d)",
           "The scores are divided by d_head instead of sqrt(d_head) (the square root forgotten), making "
           "attention too flat.", "", "llama-tiny", Stages(scale=_scale_one_over_d)),
    Mutant("attn-scale-d-model", "attention scale wrong (d_model instead of d_head)",
           "The scores are scaled by 1/sqrt(d_model) instead of 1/sqrt(d_head). Gemma-2/3 27B show how easily "
           "the two get confused: their scale uses d_model / n_heads, which differs from head_dim, and ports "
           "got it wrong in both directions.",
           "https://github.com/google/gemma_pytorch/issues/71", "llama-tiny", Stages(scale=_scale_d_model)),
    Mutant("causal-mask-off-by-one", "causal mask off by one",
           "The causal mask is built with the diagonal one too high (triu with diagonal=2 where 1 was meant), "
           "so every position also sees the token right after it: training looks great, generation does not. "
           "The diagonal argument of triu is a common point of confusion.",
           "https://github.com/TransformerLensOrg/TransformerLens/issues/284", "llama-tiny",
           Stages(visibility=_see_next)),
    Mutant("softmax-wrong-axis", "softmax over the wrong axis",
           "The attention softmax normalises over the queries (dim=-2) instead of the keys (dim=-1), so rows no "
           "longer sum to one and a query's output depends on later queries' scores.",
           "https://github.com/PetrochukM/PyTorch-NLP/issues/2", "llama-tiny",
           Stages(weights=_softmax_over_queries)),
    Mutant("half-softmax-overflow", "softmax in half precision without max subtraction",
           "The sampler's softmax runs in float16 and exponentiates the logits directly: exp overflows to inf "
           "above about 11, and inf / inf is NaN. HF's OPT produced NaNs in half precision until its softmax "
           "was upcast to float32.",
           f"{_HF}/pull/17437", "llama-tiny", Stages(softmax=_half_softmax, temperature=_divide_unshifted)),
    Mutant("layernorm-uncentred", "LayerNorm without centering",
           "LayerNorm divides by the root mean square without subtracting the mean (an RMSNorm under a "
           "LayerNorm's name), so a constant added to every coordinate is no longer removed.",
           "", "gpt2-tiny", Stages(layer_norm=_uncentred_layer_norm),
           missing="which norm the model has (config.norm): a LayerNorm that does not centre is an RMSNorm with a "
                   "bias, whose outputs NORM-1 accepts (it holds for x and a x); only a target that says it has "
                   "LayerNorm can be held to ignoring x + c"),
    Mutant("residual-dropped", "residual dropped",
           "The attention sublayer's output replaces the residual stream instead of being added to it "
           "(h = attn(h) for h = h + attn(h)), so the block forgets its input.",
           "", "gpt2-tiny", Stages(residual=_stream_replaced)),
    Mutant("mlp-mixes-positions", "MLP mixing positions",
           "The MLP normalises its input over the sequence axis (dim=1) where the feature axis was meant, so "
           "each position's output depends on every other position, later ones included.",
           "", "gpt2-tiny", Stages(mlp=_sequence_mixing_mlp)),
    Mutant("embedding-off-by-one", "embedding lookup off by one",
           "The table is read at row id - 1, as if token IDs were 1-based (Lua Torch habits, or a vocabulary "
           "file with a header line); ID 0 silently wraps to the last row through negative indexing.",
           "", "gpt2-tiny", Stages(embed=_embed_off_by_one)),
    Mutant("tied-unembedding-lost", "tied unembedding not transposed / replaced",
           "A tied model's output matrix is a freshly initialised matrix instead of E^T: the checkpoint stores "
           "only the embedding and the loader never ties lm_head to it, which gives fluent-looking garbage "
           "(tinygrad's Llama 3.2 1B loader, HF Mistral3).",
           "https://github.com/tinygrad/tinygrad/pull/13796", "gpt2-tiny", model_cls=LostTieModel),
    Mutant("logits-bias-ignored", "logits bias ignored",
           "The output projection drops its bias b_U although the checkpoint has one, reordering the argmax "
           "wherever the bias is of the size of the logit gaps (vLLM's Transformers backend for tied models "
           "with an lm_head bias).",
           "https://github.com/vllm-project/vllm/pull/46835", "gptj-tiny", Stages(unembed=_no_bias)),
    Mutant("temperature-after-top-p", "temperature applied after top-p",
           "Top-k and top-p choose their candidates on the untempered distribution; the temperature only "
           "reshapes the survivors, so T no longer widens or narrows the nucleus (fish-speech, mlx-audio's "
           "qwen3_tts, and HF before its warpers were reordered).",
           "https://github.com/fishaudio/fish-speech/pull/1150", "llama-tiny",
           Stages(filtered=_temperature_after_top_p)),
    Mutant("zero-temperature-divides", "T = 0 dividing by zero",
           "T = 0 is passed straight into z / T: the logits become inf and NaN and the draw fails ('probability "
           "tensor contains either inf, nan or element < 0') instead of being greedy.",
           "https://github.com/google-deepmind/gemma/issues/562", "llama-tiny",
           Stages(softmax=_divide_by_t_softmax, filtered=_divide_by_t_filtered, sample=_divide_by_t_sample)),
    Mutant("top-p-below-p", "top-p keeping the largest set below p",
           "The nucleus keeps tokens while the cumulative mass is below p, i.e. the largest set below p, "
           "dropping the token that makes it reach p. The boundary token is where HF's TopPLogitsWarper had "
           "its own off-by-one.",
           f"{_HF}/pull/18983", "llama-tiny", Stages(top_p=top_p_below)),
    Mutant("top-k-keeps-k-plus-one", "top-k keeping k + 1 tokens",
           "The mask over the sorted logits removes positions after index k where positions from index k on "
           "were meant (> k for >= k), so k + 1 tokens survive even where nothing ties: top_k=1 is no longer "
           "greedy. mesh-transformer-jax's sampler had exactly this off-by-one.",
           "https://github.com/kingoflolz/mesh-transformer-jax/issues/164", "llama-tiny",
           Stages(top_k=top_k_plus_one)),
    Mutant("top-k-not-renormalised", "top-k without renormalisation",
           "The filtered-out tokens are zeroed but the survivors keep their probabilities from the full "
           "distribution, which then sums to less than one.",
           "", "llama-tiny", Stages(filtered=_top_k_not_renormalised)),
    Mutant("sampler-global-rng", "sampler using the global RNG",
           "The sampler draws from torch's global generator and ignores the seeded one it is given, so the "
           "seed changes nothing and unrelated code changes the draws (ByteDance GRN's sampler set rng=None).",
           "https://github.com/bytedance/GRN/issues/27", "llama-tiny", Stages(draw=_global_rng_draw)),
    Mutant("dropout-at-inference", "dropout left on at inference",
           "Residual dropout stays active when the model is used for inference (model.eval() never called, or "
           "dropout applied with training=True), so the same input gives different logits on every call.",
           "https://github.com/karpathy/nanoGPT/pull/749", "gpt2-tiny", Stages(residual=_dropout_residual)),
    Mutant("batch-rows-leak", "batch rows leaking into each other",
           "The batch is packed into one long sequence for attention without a block-diagonal mask, so row r "
           "attends to every real token of rows before it and a prompt's logits depend on its batch-mates.",
           "https://github.com/yxlu-0102/MP-SENet/issues/64", "llama-tiny", Stages(attend=packed_attention)),
    Mutant("greedy-max-value-as-id", "greedy returning the maximum instead of its index",
           "torch.max(probs, dim=-1) returns (values, indices); unpacked in the wrong order, greedy takes the "
           "top probability for the token and casts it to an integer, so every row whose top probability is "
           "below 1 gets token 0: a valid ID, of the right shape, that is the argmax only by accident. Greedy "
           "generate and the sampler at T = 0 both go through it.",
           "", "llama-tiny", Stages(greedy=_greedy_max_value)),
    Mutant("last-logits-wrong-position", "the last position's logits taken from the wrong position",
           "Generation reads the next-token logits at index (number of real tokens - 1), which is the last "
           "token for right padding but a position in the middle for a left-padded row: HF's "
           "ForSequenceClassification heads had this bug until they searched for the rightmost real token.",
           f"{_HF}/issues/35909", "gpt2-tiny", Stages(last_position=_last_by_count)),
    Mutant("final-norm-skipped", "final norm skipped before the unembedding",
           "The model holds a final norm (its weights are loaded) but one code path sends the last residual state "
           "straight to the unembedding without it, so logits come from an un-normalised state (keys_values' "
           "long-context inference path skipped transformer.ln_f before lm_head).",
           "https://github.com/awslabs/keys_values/issues/139", "llama-tiny", Stages(final_norm=_skip_final_norm)),
    Mutant("padding-assumed-right", "padding mask built for the wrong side",
           "The attention mask is rebuilt from each row's number of real tokens (key slot < length), which is "
           "right only for right padding: in a left-padded row the padding is attended and the last real tokens "
           "are hidden (NeMo Automodel located padding by stripping trailing pads and left-padded rows got an "
           "all-ones mask).",
           "https://github.com/NVIDIA-NeMo/Automodel/pull/3704", "llama-tiny",
           Stages(visibility=_mask_from_lengths)),
    Mutant("attention-softmax-bf16", "attention softmax in low precision",
           "The attention softmax runs in bfloat16 (an autocast region around attention, or a kernel computing in "
           "the activations' reduced dtype without upcasting), so the weights carry bf16 rounding (~0.4%) in a "
           "float32 model (axlearn moved its torch attention softmax to float32 for bf16 for this reason).",
           "https://github.com/apple/axlearn/pull/18", "llama-tiny", Stages(weights=_bf16_softmax)),
    Mutant("attention-softmax-unstable", "attention softmax without max subtraction",
           "The attention weights are exp(s) / sum exp(s) with no maximum subtracted first: exact on ordinary "
           "scores, but a score above ~88 overflows exp to inf in float32 and inf / inf is NaN, so one large "
           "activation turns a whole row into NaN (hand-written attention and fused kernels that skipped the "
           "running maximum: ExecuTorch's Vulkan SDPA shader gave NaN on Phi-4-mini, whose first-layer scores "
           "reach ~151; FasterTransformer's attention kernel likewise).",
           "https://github.com/pytorch/executorch/pull/18407", "llama-tiny", Stages(weights=_unstable_softmax)),
    Mutant("gated-mlp-swapped", "gate and up projections of a gated MLP swapped",
           "SwiGLU's two input projections are used in each other's place, act(x W_up) * (x W_gate) for act(x "
           "W_gate) * (x W_up), as when a fused gate_up weight is split in the wrong order or a loader assigns "
           "the two by creation order: finite, plausible activations and wrong logits (nntrainer's CausalLM "
           "computed silu(up_proj) * gate_proj).",
           "https://github.com/nntrainer/nntrainer/pull/4194", "llama-tiny", Stages(gate=_gate_swapped),
           missing="which of the two input projections is the gate: with them swapped the MLP is still a gated MLP "
                   "acting on each position (MLP-1, MLP-2 hold), so only the weights' own naming, through config "
                   "and the converter (MLP-1's formula check, REF-1), tells"),
    Mutant("tied-by-copy", "tied embeddings untied by a copy",
           "A tied model's output matrix is a copy of E^T made when the model is loaded or wrapped (a sharded "
           "or re-initialised head that is never re-tied): inference is exactly right, but training updates E and "
           "U apart, so the trained model is no longer tied (lingua's weight tying was lost in the consolidated "
           "checkpoint).",
           "https://github.com/facebookresearch/lingua/issues/74", "gpt2-tiny", model_cls=TiedCopyModel,
           missing="a change to E in a model of its own (build): the copy equals E^T bit for bit, so every "
                   "computation of the target as loaded is a correct tied model's; only once E changes, by an edit "
                   "of a built model's weights (TOK-5) or a training step (OUT-3), do E and U differ"),
]
# the reference's mutants, then the same bug classes put into HuggingFace models (spec.targets.hf_mutants)
_ALL: list[Mutant | HFMutant] = [*_ZOO, *HF_ZOO]
MUTANTS: dict[str, Mutant | HFMutant] = {m.name: m for m in _ALL}


def build(name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
          seed: int = 0) -> Target:
    """The mutant target ``name`` on its preset (random weights from ``seed``)."""
    if name not in MUTANTS:
        raise ValueError(f"unknown mutant {name!r}; choose one of {sorted(MUTANTS)}")
    m = MUTANTS[name]
    if isinstance(m, HFMutant):
        return hf_mutants.build(name, device=device, dtype=dtype, seed=seed)
    model = reference.build(reference.preset(m.preset), seed=seed, device=device, dtype=dtype)
    return MutantTarget(m, model)


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``mutant:<name>`` kind."""
    return build(rest, device=device, dtype=dtype)


__all__ = ["MUTANTS", "HFMutant", "Mutant", "MutantTarget", "Stages", "build", "from_spec", "replace"]
