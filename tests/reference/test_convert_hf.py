"""reference.convert: every supported HF family, checked against transformers itself.

For each family a Hypothesis property draws a tiny HF config (1-2 layers, 1-4 heads with
every divisor as KV heads where the family has GQA/MQA, head width 4-16, vocabulary
50-200, the family's rotary / bias / norm / layout options), builds the HF model from it
with random weights (no hub: ``from_config``), converts it with ``from_hf`` and checks,
in float32 and again in float64 (HF model ``.to(float64)``, converted again):

- logits of an unpadded batch, and every residual state against HF's
  ``output_hidden_states`` (HF's last entry has the final norm applied, in every family
  here; the reference's states are all before it, so the last is compared after
  ``final_norm``);
- cached decoding, one token at a time through the reference's KV cache, against HF's
  full-sequence logits;
- a left-padded batch at its real tokens: in float32 against HF's padded batch (HF given
  explicit position_ids = cumsum(mask) - 1, clamped, as ``generate`` makes them); in
  float64 against HF run on each row alone, because HF's eager float64 attention turns a
  fully masked padding row into NaN (finfo(float64).min becomes -inf in its float32
  softmax) and the NaN then leaks through the values into real tokens;
- greedy generation: the reference's tokens equal ``hf.generate(do_sample=False)``'s, on
  the left-padded prompts in float32 and the unpadded ones in float64.

Weights are drawn N(0, 0.2^2) (norm gains 1 +- 0.2 around HF's own init, so Gemma's
stored w gives a gain 1 + w), far from HF's tiny default init, so a wiring slip moves
logits by ~1e-1, not 1e-6. Norm eps and rotary theta are drawn from wide sets so a
wrongly mapped one shows.

Tolerances. float32: torch.testing's float32 defaults (rtol 1.3e-6, atol 1e-5), with atol
multiplied by the largest |value| of the compared tensor when that exceeds 1: both sides
round at ~6e-8 relative to the magnitudes that were summed, which are those of the whole
vector, so a logit near 0 among logits ~5 carries ~5x the absolute error the defaults
(made for values of order 1) allow; unscaled, rare examples came within 10% of atol.
float64: HF's float64 models are not float64 throughout. transformers keeps float32
islands: rotary cos/sin come from float32 angles (``position_ids.float() *
inv_freq.float()``, GPT-J's float32 sinusoid table), Llama-family RMSNorms compute in
float32, eager softmaxes run in float32 (``softmax(..., dtype=torch.float32)``), GPT-J
casts queries and keys to float32, ALiBi slopes are float32, and BLOOM's GELU writes
sqrt(2/pi) to 8 digits. Each is a ~6e-8 relative rounding; together they move logits by
up to ~2.5e-6, so those families are compared at rtol = atol = 1e-5 (``FLOAT64_ISLANDS``).
GPT-2 has no float32 island in eager mode and is compared at 1e-10 (seen: ~1e-14).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from reference import generate  # noqa: E402
from reference.convert import CONVERTERS, UnsupportedConfig, from_hf  # noqa: E402
from reference.convert.common import Weights, rope  # noqa: E402
from spec.targets.hf_presets import CONFIG_CLASSES, HF_PRESETS, family_config, random_hf_model  # noqa: E402

pytestmark = pytest.mark.hf

EXAMPLES = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def float32_tolerance(expected: torch.Tensor) -> dict[str, float]:
    """torch.testing's float32 defaults (rtol 1.3e-6, atol 1e-5), atol scaled by the tensor's magnitude if > 1."""
    return {"rtol": 1.3e-6, "atol": 1e-5 * max(1.0, float(expected.abs().max()))}


FLOAT64_EXACT = {"rtol": 1e-10, "atol": 1e-10}
FLOAT64_ISLANDS = {"rtol": 1e-5, "atol": 1e-5}  # see the module docstring
FLOAT64 = {family: FLOAT64_ISLANDS for family in CONVERTERS} | {"gpt2": FLOAT64_EXACT}

TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
MAX_POS = 64
NEW_TOKENS = 4

# per (family, dtype): worst |difference| and worst share of the tolerance used, |d| / (atol + rtol |expected|);
# printed at the end with CONVERT_HF_REPORT=1
WORST: dict[tuple[str, str], tuple[float, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matmuls gain nothing from threads, and on a busy CPU intra-op threads spin: use one.

    Also prints the worst differences seen when CONVERT_HF_REPORT is set (pytest -s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if os.environ.get("CONVERT_HF_REPORT"):
        for (family, dtype), (diff, share) in sorted(WORST.items()):
            print(f"\n{family:10s} {dtype:8s} max |diff| = {diff:.3g}, max share of tolerance = {share:.3g}", end="")


# ------------------------------------------------------------------------------ building models


def hf_model(config: Any, seed: int) -> Any:
    """An HF causal LM from ``config`` with weights N(0, 0.2^2) and norm gains 1 +- 0.2, in eval mode.

    The same randomization as the ``hf:<family>`` spec targets (spec.targets.hf_presets).
    """
    model = random_hf_model(config, seed, dtype=torch.float32, std=0.2)
    model.generation_config.eos_token_id = None  # never stop early: compare every step
    model.generation_config.pad_token_id = 0
    return model.eval()


def forward_hf(model: Any, ids: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
    kwargs: dict[str, Any] = {"output_hidden_states": True}
    if mask is not None:
        kwargs["attention_mask"] = mask.long()
        if "position_ids" in inspect.signature(model.forward).parameters:
            kwargs["position_ids"] = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(ids, **kwargs)


Tolerance = dict[str, float] | Callable[[torch.Tensor], dict[str, float]]


def close(family: str, actual: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance, what: str) -> None:
    tol = tolerance(expected) if callable(tolerance) else tolerance
    key = (family, str(actual.dtype).removeprefix("torch."))
    diff = (actual - expected).abs()
    share = diff / (tol["atol"] + tol["rtol"] * expected.abs())
    old = WORST.get(key, (0.0, 0.0))
    WORST[key] = (max(old[0], float(diff.max())), max(old[1], float(share.max())))
    torch.testing.assert_close(actual, expected, rtol=tol["rtol"], atol=tol["atol"],
                               msg=lambda m: f"{family} {what}: {m}")


def check_family(family: str, config: Any, seed: int) -> None:
    """The whole comparison for one drawn config (see the module docstring)."""
    assert config.model_type == family
    hf = hf_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 9, (), generator=g))
    ids = torch.randint(0, config.vocab_size, (2, t), generator=g)
    pads = int(torch.randint(1, t, (), generator=g))
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[0, :pads] = False
    tolerances: list[tuple[torch.dtype, Tolerance]] = [(torch.float32, float32_tolerance),
                                                       (torch.float64, FLOAT64[family])]
    for dtype, tol in tolerances:
        hf = hf.to(dtype)
        model = from_hf(hf)
        assert model.dtype == dtype and model.cfg.vocab_size == config.vocab_size

        # logits and per-layer residual states
        expected = forward_hf(hf, ids)
        with torch.no_grad():
            out = model(ids, return_states=True)
        assert out.states is not None
        close(family, out.logits, expected.logits, tol, f"{dtype} logits")
        states = expected.hidden_states
        n = model.cfg.n_layers
        assert len(states) == len(out.states) == n + 1
        for i in range(n):
            close(family, out.states[i], states[i], tol, f"{dtype} residual state {i}")
        with torch.no_grad():
            close(family, model.final_norm(out.states[n]), states[n], tol, f"{dtype} final normed state")

        # cached decoding, one token at a time
        cache = model.new_cache(2, t)
        with torch.no_grad():
            steps = [model(ids[:, j:j + 1], cache=cache).logits for j in range(t)]
        close(family, torch.cat(steps, dim=1), expected.logits, tol, f"{dtype} cached decoding")

        # left-padded batch, compared at the real tokens
        with torch.no_grad():
            logits = model(ids, mask).logits
        if dtype == torch.float32:
            real = forward_hf(hf, ids, mask).logits[mask]
        else:  # HF's own padded float64 path can give NaN (module docstring): each row alone, unpadded
            real = torch.cat([forward_hf(hf, ids[i:i + 1, mask[i]]).logits[0] for i in range(2)])
        close(family, logits[mask], real, tol, f"{dtype} left-padded logits")

        # greedy generation: float32 with left padding, float64 without
        prompt_mask = mask if dtype == torch.float32 else torch.ones_like(mask)
        with torch.no_grad():
            theirs = hf.generate(ids, attention_mask=prompt_mask.long(), max_new_tokens=NEW_TOKENS, do_sample=False)
        ours = generate(model, ids, NEW_TOKENS, attention_mask=prompt_mask)
        assert torch.equal(ours, theirs), f"{family} {dtype} greedy tokens differ:\n{ours}\n{theirs}"


# ------------------------------------------------------------------------------ strategies

seeds = st.integers(0, 2**31 - 1)
eps = st.sampled_from([1e-6, 1e-5, 1e-2])
thetas = st.sampled_from([10000.0, 500.0, 1e6])


@st.composite
def heads(draw: st.DrawFn, *, max_heads: int = 4, gqa: bool = True) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads dividing it, even head width 4-16)."""
    h = draw(st.integers(1, max_heads))
    kv = draw(st.sampled_from([k for k in range(1, h + 1) if h % k == 0])) if gqa else h
    return h, kv, draw(st.sampled_from([4, 6, 8, 10, 12, 14, 16]))


def rotary_factor(draw: st.DrawFn, head_dim: int) -> float:
    """A fraction of the head that rotates an even number (>= 2) of coordinates."""
    width = draw(st.sampled_from(range(2, head_dim + 1, 2)))
    return width / head_dim


def common(draw: st.DrawFn) -> dict[str, Any]:
    return {"vocab_size": draw(st.integers(50, 200)), "num_hidden_layers": draw(st.integers(1, 2)), **TOKENS}


def rope_parameters(draw: st.DrawFn, factor: float | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": draw(thetas)}
    if factor is not None:
        params["partial_rotary_factor"] = factor
    return params


@st.composite
def llama_like(draw: st.DrawFn, family: str) -> Any:
    h, kv, dh = draw(heads())
    kwargs = common(draw) | {
        # head_dim is explicit, so the width need not be heads * head_dim (HF still wants a multiple of heads)
        "hidden_size": h * draw(st.sampled_from([4, 8, 12])), "head_dim": dh,
        "num_attention_heads": h, "num_key_value_heads": kv,
        "ffn_size": draw(st.integers(8, 48)), "rms_norm_eps": draw(eps),
        "max_positions": MAX_POS, "tie_word_embeddings": draw(st.booleans()),
        "rope_parameters": rope_parameters(draw),
        "hidden_act": draw(st.sampled_from(["silu", "gelu", "gelu_pytorch_tanh", "gelu_new", "relu"])),
    }
    if family == "llama":
        kwargs |= {"attention_bias": draw(st.booleans()), "mlp_bias": draw(st.booleans())}
        return family_config(family, **kwargs)
    if family == "mistral":  # a window the test's sequences (<= 8 + 4 tokens) never exceed
        return family_config(family, **kwargs, sliding_window=draw(st.sampled_from([None, 12, 4096])))
    if family == "qwen2":
        kwargs.pop("head_dim")
        kwargs["hidden_size"] = h * dh
        return family_config(family, **kwargs, use_sliding_window=draw(st.booleans()),
                             sliding_window=12, max_window_layers=draw(st.integers(0, 2)))
    if family == "gemma":
        return family_config(family, **kwargs, attention_bias=draw(st.booleans()))
    if family == "phi3":
        kwargs.pop("head_dim")
        kwargs["hidden_size"] = h * dh
        kwargs["rope_parameters"] = rope_parameters(draw, rotary_factor(draw, dh))
        return family_config(family, **kwargs, sliding_window=draw(st.sampled_from([None, 12])))
    raise AssertionError(family)


@st.composite
def gpt2(draw: st.DrawFn) -> Any:
    h, _, dh = draw(heads(gqa=False))
    return family_config(
        "gpt2", **common(draw), hidden_size=h * dh, num_attention_heads=h, max_positions=MAX_POS,
        ffn_size=draw(st.one_of(st.none(), st.integers(8, 48))),
        activation_function=draw(st.sampled_from(["gelu_new", "gelu", "gelu_pytorch_tanh", "relu", "silu"])),
        layer_norm_epsilon=draw(eps), scale_attn_weights=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()))


@st.composite
def gpt_neox(draw: st.DrawFn) -> Any:
    h, _, dh = draw(heads(gqa=False))
    return family_config(
        "gpt_neox", **common(draw), hidden_size=h * dh, num_attention_heads=h, ffn_size=draw(st.integers(8, 48)),
        hidden_act=draw(st.sampled_from(["gelu", "gelu_new", "relu"])), layer_norm_eps=draw(eps),
        max_positions=MAX_POS, rotary_pct=rotary_factor(draw, dh), rotary_emb_base=draw(thetas),
        use_parallel_residual=draw(st.booleans()), attention_bias=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()))


@st.composite
def gptj(draw: st.DrawFn) -> Any:
    h, _, dh = draw(heads(gqa=False))
    rotary_dim = draw(st.sampled_from(range(2, dh + 1, 2)))  # transformers 5 requires an int
    return family_config(
        "gptj", **common(draw), hidden_size=h * dh, num_attention_heads=h, max_positions=MAX_POS,
        rotary_dim=rotary_dim, ffn_size=draw(st.one_of(st.none(), st.integers(8, 48))),
        activation_function=draw(st.sampled_from(["gelu_new", "gelu", "relu"])), layer_norm_epsilon=draw(eps),
        tie_word_embeddings=draw(st.booleans()))


@st.composite
def phi(draw: st.DrawFn) -> Any:
    h, kv, dh = draw(heads())
    return family_config(
        "phi", **common(draw), hidden_size=h * dh, num_attention_heads=h, num_key_value_heads=kv,
        ffn_size=draw(st.integers(8, 48)), hidden_act=draw(st.sampled_from(["gelu_new", "gelu", "relu"])),
        layer_norm_eps=draw(eps), max_positions=MAX_POS,
        rope_parameters=rope_parameters(draw, rotary_factor(draw, dh)), tie_word_embeddings=draw(st.booleans()))


@st.composite
def opt(draw: st.DrawFn) -> Any:
    h, _, dh = draw(heads(gqa=False))
    return family_config(
        "opt", **common(draw), hidden_size=h * dh, num_attention_heads=h, ffn_size=draw(st.integers(8, 48)),
        max_positions=MAX_POS, activation_function=draw(st.sampled_from(["relu", "gelu", "gelu_new"])),
        enable_bias=draw(st.booleans()), layer_norm_elementwise_affine=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()), dropout=0.0)


@st.composite
def bloom(draw: st.DrawFn) -> Any:
    h, _, dh = draw(heads(max_heads=6, gqa=False))  # 3, 5, 6 heads exercise ALiBi's non-power-of-2 slopes
    return family_config(
        "bloom", **common(draw), hidden_size=h * dh, num_attention_heads=h, layer_norm_epsilon=draw(eps),
        pretraining_tp=draw(st.sampled_from([1, 2])), slow_but_exact=False, tie_word_embeddings=draw(st.booleans()))


@st.composite
def falcon(draw: st.DrawFn) -> Any:
    new = draw(st.booleans())
    h, kv, dh = draw(heads(gqa=new))
    layout: dict[str, Any] = {"new_decoder_architecture": new, "num_key_value_heads": kv}
    if new:
        layout |= {"parallel_attn": True, "num_ln_in_parallel_attn": draw(st.sampled_from([None, 1, 2]))}
    else:
        layout |= {"multi_query": draw(st.booleans()), "parallel_attn": draw(st.booleans())}
    return family_config(
        "falcon", **common(draw), **layout, hidden_size=h * dh, num_attention_heads=h, alibi=False,
        bias=draw(st.booleans()), ffn_size=draw(st.integers(8, 48)),
        activation=draw(st.sampled_from(["gelu", "relu", "gelu_new"])), layer_norm_epsilon=draw(eps),
        max_positions=MAX_POS, rope_parameters=rope_parameters(draw),
        tie_word_embeddings=draw(st.booleans()))


FAMILIES: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
    "llama": lambda: llama_like("llama"),
    "mistral": lambda: llama_like("mistral"),
    "qwen2": lambda: llama_like("qwen2"),
    "gemma": lambda: llama_like("gemma"),
    "phi3": lambda: llama_like("phi3"),
    "gpt2": gpt2,
    "gpt_neox": gpt_neox,
    "gptj": gptj,
    "phi": phi,
    "opt": opt,
    "bloom": bloom,
    "falcon": falcon,
}


def test_every_registered_family_is_tested() -> None:
    assert set(FAMILIES) == set(CONVERTERS) == set(CONFIG_CLASSES)


def test_every_family_is_a_spec_target() -> None:
    """Each converted family is also checked by the spec itself, as an ``hf:<preset>`` target (issue #4)."""
    assert {make().model_type for make in HF_PRESETS.values()} == set(CONVERTERS)


@EXAMPLES
@given(config=FAMILIES["llama"](), seed=seeds)
def test_llama_matches_hf(config: Any, seed: int) -> None:
    check_family("llama", config, seed)


@EXAMPLES
@given(config=FAMILIES["mistral"](), seed=seeds)
def test_mistral_matches_hf(config: Any, seed: int) -> None:
    check_family("mistral", config, seed)


@EXAMPLES
@given(config=FAMILIES["qwen2"](), seed=seeds)
def test_qwen2_matches_hf(config: Any, seed: int) -> None:
    check_family("qwen2", config, seed)


@EXAMPLES
@given(config=FAMILIES["gemma"](), seed=seeds)
def test_gemma_matches_hf(config: Any, seed: int) -> None:
    check_family("gemma", config, seed)


@EXAMPLES
@given(config=FAMILIES["phi3"](), seed=seeds)
def test_phi3_matches_hf(config: Any, seed: int) -> None:
    check_family("phi3", config, seed)


@EXAMPLES
@given(config=FAMILIES["gpt2"](), seed=seeds)
def test_gpt2_matches_hf(config: Any, seed: int) -> None:
    check_family("gpt2", config, seed)


@EXAMPLES
@given(config=FAMILIES["gpt_neox"](), seed=seeds)
def test_gpt_neox_matches_hf(config: Any, seed: int) -> None:
    check_family("gpt_neox", config, seed)


@EXAMPLES
@given(config=FAMILIES["gptj"](), seed=seeds)
def test_gptj_matches_hf(config: Any, seed: int) -> None:
    check_family("gptj", config, seed)


@EXAMPLES
@given(config=FAMILIES["phi"](), seed=seeds)
def test_phi_matches_hf(config: Any, seed: int) -> None:
    check_family("phi", config, seed)


@EXAMPLES
@given(config=FAMILIES["opt"](), seed=seeds)
def test_opt_matches_hf(config: Any, seed: int) -> None:
    check_family("opt", config, seed)


@EXAMPLES
@given(config=FAMILIES["bloom"](), seed=seeds)
def test_bloom_matches_hf(config: Any, seed: int) -> None:
    check_family("bloom", config, seed)


@EXAMPLES
@given(config=FAMILIES["falcon"](), seed=seeds)
def test_falcon_matches_hf(config: Any, seed: int) -> None:
    check_family("falcon", config, seed)


# ------------------------------------------------------------------------------ what is refused

TINY = {"vocab_size": 64, "num_hidden_layers": 1, **TOKENS}
LLAMA = TINY | {"hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 16}
GPT2 = TINY | {"n_embd": 16, "n_head": 2, "n_positions": 32}
NEOX = TINY | {"hidden_size": 16, "num_attention_heads": 4, "intermediate_size": 16}  # head_dim 4
OPT = TINY | {"hidden_size": 16, "num_attention_heads": 2, "ffn_dim": 16}
FALCON = TINY | {"hidden_size": 16, "num_attention_heads": 4, "ffn_hidden_size": 16}
BLOOM = TINY | {"hidden_size": 16, "n_head": 2}

UNSUPPORTED: list[tuple[str, Callable[[], Any], str]] = [
    ("llama", lambda: transformers.LlamaConfig(**LLAMA, rope_parameters={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}), "rope_parameters['rope_type']='linear'"),
    ("llama", lambda: transformers.LlamaConfig(**LLAMA, hidden_act="gelu_fast"), "hidden_act='gelu_fast'"),
    ("mistral", lambda: transformers.MistralConfig(**LLAMA, hidden_act="quick_gelu"), "hidden_act='quick_gelu'"),
    ("gemma", lambda: transformers.GemmaConfig(**LLAMA, head_dim=8, use_bidirectional_attention=True),
     "use_bidirectional_attention=True"),
    ("gpt2", lambda: transformers.GPT2Config(**GPT2, scale_attn_by_inverse_layer_idx=True),
     "scale_attn_by_inverse_layer_idx=True"),
    ("gpt2", lambda: transformers.GPT2Config(**GPT2, add_cross_attention=True), "add_cross_attention=True"),
    ("gpt2", lambda: transformers.GPT2Config(**GPT2, activation_function="gelu_fast"),
     "activation_function='gelu_fast'"),
    ("gpt_neox", lambda: transformers.GPTNeoXConfig(**NEOX, rotary_pct=0.25),  # rotates 1 coordinate
     "partial_rotary_factor']=0.25"),
    ("gptj", lambda: SimpleNamespace(  # transformers 4.x allowed rotary_dim=None (5.x wants an int)
        model_type="gptj", n_embd=16, n_head=2, rotary_dim=None), "rotary_dim=None"),
    ("gptj", lambda: transformers.GPTJConfig(**GPT2, rotary_dim=3), "rotary_dim=3"),
    ("phi", lambda: transformers.PhiConfig(**LLAMA, qk_layernorm=True), "qk_layernorm=True"),
    ("opt", lambda: transformers.OPTConfig(**OPT, do_layer_norm_before=False), "do_layer_norm_before=False"),
    ("opt", lambda: transformers.OPTConfig(**OPT, word_embed_proj_dim=8), "word_embed_proj_dim=8"),
    ("opt", lambda: transformers.OPTConfig(**OPT, _remove_final_layer_norm=True), "_remove_final_layer_norm=True"),
    ("bloom", lambda: transformers.BloomConfig(**BLOOM, apply_residual_connection_post_layernorm=True),
     "apply_residual_connection_post_layernorm=True"),
    ("bloom", lambda: transformers.BloomConfig(**BLOOM, pretraining_tp=2, slow_but_exact=True),
     "slow_but_exact=True"),
    ("falcon", lambda: transformers.FalconConfig(**FALCON, alibi=True), "alibi=True"),
    ("falcon", lambda: transformers.FalconConfig(**FALCON, new_decoder_architecture=True, num_kv_heads=2,
                                                 parallel_attn=False), "parallel_attn=False"),
    ("falcon", lambda: transformers.FalconConfig(**FALCON, multi_query=False, num_kv_heads=2), "num_kv_heads=2"),
    ("falcon", lambda: transformers.FalconConfig(**FALCON, multi_query=True, parallel_attn=True,
                                                 num_ln_in_parallel_attn=2), "num_ln_in_parallel_attn=2"),
]


@pytest.mark.parametrize(("family", "make", "field"), UNSUPPORTED,
                         ids=[f"{family}-{field}" for family, _, field in UNSUPPORTED])
def test_unsupported_config_is_refused_naming_the_field(family: str, make: Callable[[], Any], field: str) -> None:
    config = make()
    assert config.model_type == family
    with pytest.raises(UnsupportedConfig, match=r"config\.") as info:
        from_hf((config, {}))
    assert field in str(info.value)


def test_unknown_model_type_lists_the_supported_ones() -> None:
    config = transformers.Gemma2Config(**LLAMA, head_dim=8)  # soft-capping, sliding layers: not registered
    with pytest.raises(UnsupportedConfig, match="model_type='gemma2'") as info:
        from_hf((config, {}))
    assert all(name in str(info.value) for name in CONVERTERS)
    assert isinstance(info.value, ValueError)


def test_quantized_weights_are_refused_and_dequantized_gguf_converts() -> None:
    """quantization_config: GGUF dequantized on load converts; packed weights or another method is refused."""
    config = transformers.LlamaConfig(**LLAMA)
    hf = hf_model(config, 4)
    sd = dict(hf.state_dict())
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    config.quantization_config = {"quant_method": "gguf"}  # what from_pretrained(gguf_file=...) leaves behind
    with torch.no_grad():
        torch.testing.assert_close(from_hf((config, sd))(ids).logits, hf(ids).logits, rtol=1.3e-6, atol=1e-5)
    with pytest.raises(UnsupportedConfig, match="not floating point"):
        from_hf((config, sd | {"model.layers.0.mlp.down_proj.weight": torch.zeros(16, 16, dtype=torch.int8)}))
    config.quantization_config = {"quant_method": "bitsandbytes"}
    with pytest.raises(UnsupportedConfig, match="quant_method='bitsandbytes'"):
        from_hf((config, sd))


def test_leftover_weights_are_refused() -> None:
    """A weight the converter does not map means a wiring it does not know: refuse, name the weight."""
    config = transformers.PhiConfig(**LLAMA)
    sd = dict(hf_model(config, 0).state_dict())
    sd["model.layers.0.self_attn.q_layernorm.weight"] = torch.ones(8)
    with pytest.raises(UnsupportedConfig, match="q_layernorm"):
        from_hf((config, sd))


# ------------------------------------------------------------------------------ details


def test_sliding_window_caps_the_context() -> None:
    """A window shorter than max_position_embeddings becomes the reference's context length."""
    config = transformers.MistralConfig(**LLAMA, max_position_embeddings=64, sliding_window=12)
    model = from_hf(hf_model(config, 0))
    assert model.cfg.max_positions == 12
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.zeros(1, 13, dtype=torch.long))
    no_window = transformers.MistralConfig(**LLAMA, max_position_embeddings=64, sliding_window=None)
    assert from_hf((no_window, hf_model(no_window, 0).state_dict())).cfg.max_positions == 64


def test_config_and_state_dict_pair_with_requested_dtype() -> None:
    config = transformers.LlamaConfig(**LLAMA)
    hf = hf_model(config, 3)
    model = from_hf((config, hf.state_dict()), dtype=torch.float64, device="cpu")
    assert model.dtype == torch.float64 and not model.training
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        expected = from_hf(hf.double())(ids).logits
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)


def test_gemma_embedding_scale_is_rounded_as_hf_stores_it() -> None:
    config = transformers.GemmaConfig(**LLAMA, head_dim=8)
    cfg = CONVERTERS["gemma"].config(config)
    hf = hf_model(config, 0)
    assert cfg.embedding_scale == float(hf.model.embed_tokens.embed_scale) == float(torch.tensor(16**0.5))


def test_transformers_4_style_rope_fields() -> None:
    """transformers 4.x configs carry rope_theta / rope_scaling (GPT-NeoX: rotary_emb_base, rotary_pct)."""
    assert rope(SimpleNamespace(rope_theta=500.0, rope_scaling=None)) == (500.0, 1.0)
    assert rope(SimpleNamespace(rope_theta=500.0, partial_rotary_factor=0.5, rope_scaling={"type": "default"})) \
        == (500.0, 0.5)
    with pytest.raises(UnsupportedConfig, match="rope_scaling='dynamic'"):
        rope(SimpleNamespace(rope_theta=500.0, rope_scaling={"type": "dynamic", "factor": 2.0}))
    neox4 = SimpleNamespace(
        model_type="gpt_neox", vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, hidden_act="gelu", layer_norm_eps=1e-5, max_position_embeddings=32,
        rotary_pct=0.5, rotary_emb_base=1234.0, rope_scaling=None, use_parallel_residual=True,
        attention_bias=True, tie_word_embeddings=False)
    cfg = CONVERTERS["gpt_neox"].config(neox4)
    assert (cfg.rotary_theta, cfg.rotary_fraction, cfg.rotary_dim) == (1234.0, 0.5, 4)


def test_weights_reader_names_missing_weights() -> None:
    w = Weights({"a": torch.zeros(1)})
    with pytest.raises(KeyError, match="'b'"):
        w("b")


def test_gpt2_reorder_and_upcast_attn_is_the_same_function() -> None:
    """Only the precision of the scores changes (HF runs this path in float32 only: float64 raises there)."""
    config = transformers.GPT2Config(**GPT2, reorder_and_upcast_attn=True)
    hf = hf_model(config, 5)
    ids = torch.tensor([[5, 3, 9, 1, 7, 2]])
    with torch.no_grad():
        expected = hf(ids).logits
        close("gpt2", from_hf(hf)(ids).logits, expected, float32_tolerance, "reorder_and_upcast_attn logits")
