"""Tests of the executable figures (spec/figures.py, ``next-token-spec figures``).

- Every figure is written as a PNG (700 px wide, under 150 KB) and a well-formed SVG,
  with no date or software version inside, byte for byte the same when drawn twice.
- The data each figure draws satisfies the claims it illustrates, checked here
  independently of the drawing and, where possible, of the claim's own code: by
  recomputing a value another way (an explicit softmax, the logits of a plain forward
  pass, attention rebuilt from queries and keys).
- Each check rejects wrong data: the same data with one realistic corruption (the
  source's illustrative probabilities, a reversed curve, equal-length rows, raw scores
  instead of attention weights, ...) fails it.

Figures 2-7 read SmolLM2 (target ``smollm2``); like tests/spec_meta/test_claims_tr.py they
skip, saying how to get it, when it is missing, and fail instead with
NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1 (CI).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from spec import figures
from spec.target import Target
from spec.targets import smollm2
from spec.tolerance import CLASSES

F32 = CLASSES["float32"]  # SmolLM2 runs in float32: the same d-term sums in two orders (spec/tolerance.py)
MAX_PNG_BYTES = 150_000
STEMS = [f.stem for f in figures.FIGURES]
PUBLISHED = {"the": 0.0841, "cat": 0.2286, "runs": 0.0309, "blue": 0.0042, "quickly": 0.6213, "banana": 0.0309}


@pytest.fixture(scope="module")
def model(smollm2_available: None) -> Target:
    return smollm2.load_reference()


@pytest.fixture(scope="module")
def drawn(model: Target, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, list[Path]]]:
    """Every figure, drawn once for the module into a temporary folder: {stem: (data, [png, svg])}."""
    return figures.write(tmp_path_factory.mktemp("figures"), model)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Path]]:
    """Figure 1 alone: it needs no model."""
    return figures.write(tmp_path_factory.mktemp("toy"), None, only=["1-toy-softmax"])["1-toy-softmax"]


# ------------------------------------------------------------------------------ the files


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk
    return width, height


def _check_files(paths: list[Path]) -> None:
    png, svg = paths
    assert (png.suffix, svg.suffix) == (".png", ".svg")
    width, height = _png_size(png)
    assert width == round(figures.WIDTH * figures.DPI) and 200 <= height <= 600, (width, height)
    assert 5_000 < png.stat().st_size < MAX_PNG_BYTES, png.stat().st_size
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = svg.read_text(encoding="utf-8")
    assert "<dc:date>" not in text and "Matplotlib v" not in text, "the SVG carries a date or a version"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 20, "the SVG draws (almost) nothing"


def test_toy_figure_files_and_stable_output(toy: tuple[Any, list[Path]], tmp_path: Path) -> None:
    _check_files(toy[1])
    again = figures.write(tmp_path, None, only=["1-toy-softmax"])["1-toy-softmax"][1]
    for first, second in zip(toy[1], again, strict=True):
        assert first.read_bytes() == second.read_bytes(), f"{first.name} differs when drawn twice"


@pytest.mark.parametrize("stem", STEMS)
def test_figure_files(drawn: dict[str, tuple[Any, list[Path]]], stem: str) -> None:
    _check_files(drawn[stem][1])


def test_unknown_figure_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown figures.*no-such"):
        figures.write(tmp_path, None, only=["no-such"])


def test_model_figure_without_a_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a target"):
        figures.write(tmp_path, None, only=["2-temperature"])


# ------------------------------------------------------------------------------ the data satisfies its claims


def check_toy(d: figures.ToyData, target: Target | None) -> None:
    """OUT-2: logits [5, 6, 4, 2, 7, 4] exactly, argmax "quickly", softmax the published 4 decimals."""
    assert d.names == ["the", "cat", "runs", "blue", "quickly", "banana"]
    assert d.logits.tolist() == [5.0, 6.0, 4.0, 2.0, 7.0, 4.0]
    assert d.names[int(d.probs.argmax())] == "quickly"
    by_hand = [math.exp(z) / sum(math.exp(x) for x in d.logits.tolist()) for z in d.logits.tolist()]
    torch.testing.assert_close(d.probs, torch.tensor(by_hand, dtype=torch.float64), atol=1e-15, rtol=0)
    # 5e-5 is half a unit in the published 4th decimal, the rounding of the figures themselves
    for name, p in zip(d.names, d.probs.tolist(), strict=True):
        assert abs(p - PUBLISHED[name]) <= 5e-5, (name, p)


def check_temperature(d: figures.TemperatureData, target: Target) -> None:
    """SOFT-4 (limits) and SOFT-5 (bounds and monotonicity) along the drawn temperatures."""
    v, pm, h = d.vocab, d.p_max.tolist(), d.entropy.tolist()
    sp, sh = d.p_max_allowance.tolist(), d.entropy_allowance.tolist()
    assert v == target.vocab_size and d.temperatures == sorted(d.temperatures) and 1.0 in d.temperatures
    for k in range(len(pm)):
        assert 1 / v - sp[k] <= pm[k] <= 1 + sp[k] and -sh[k] <= h[k] <= math.log(v) + sh[k], k
    for k in range(len(pm) - 1):
        assert pm[k + 1] <= pm[k] + sp[k] + sp[k + 1], f"top probability rises from T={d.temperatures[k]:.3g}"
        assert h[k + 1] >= h[k] - sh[k] - sh[k + 1], f"entropy falls from T={d.temperatures[k]:.3g}"
    assert d.at_zero == (1.0, 0.0)
    z = target.logits(torch.tensor([target.tokenizer().encode(d.prompt)]))[0, -1].double()
    top2 = z.topk(2).values
    gap, spread = float(top2[0] - top2[1]), float(z.max() - z.min())
    t0, t1 = d.temperatures[0], d.temperatures[-1]
    assert pm[0] >= 1 - (v - 1) * math.exp(-gap / t0) - sp[0], "not one-hot at the smallest temperature"
    assert abs(pm[-1] - 1 / v) <= math.expm1(spread / t1) / v + sp[-1], "not uniform at the largest temperature"
    one = d.temperatures.index(1.0)
    torch.testing.assert_close(d.p_max[one], torch.softmax(z, 0).max(), atol=F32.atol, rtol=F32.rtol)


def check_length(d: figures.LengthData, target: Target) -> None:
    """SOFT-6: one argmax at every scale, entropy never rises with a, T = 1/a gives the same, a = 0 is uniform."""
    z = target.logits(torch.tensor([target.tokenizer().encode(d.prompt)]))[0, -1].double()
    assert d.scales == sorted(d.scales) and 1.0 in d.scales
    assert set(d.argmax) == {int(z.argmax())}, "the argmax changes with the scale"
    h, e = d.entropy.tolist(), d.entropy_allowance.tolist()
    for k in range(len(h) - 1):
        assert h[k + 1] <= h[k] + e[k] + e[k + 1], f"entropy rises from a={d.scales[k]:.3g}"
    torch.testing.assert_close(d.p_max, d.p_max_by_temperature, atol=F32.atol, rtol=F32.rtol)
    one = d.scales.index(1.0)
    torch.testing.assert_close(d.p_max[one], torch.softmax(z, 0).max(), atol=F32.atol, rtol=F32.rtol)
    # a = 0: every logit is exactly 0, so float32 gives 1/V up to the rounding of 1/V itself (u / V)
    assert d.zero_scale_deviation <= 2.0**-24 / d.vocab
    spread = float(z.max() - z.min())
    # exactly p_max <= e^(a R) / V; 1e-4 relative covers float32 rounding of V terms (V u ~ 3e-3 worst, ~1e-5 typical)
    assert d.p_max[0] <= math.exp(spread * d.scales[0]) / d.vocab * (1 + 1e-4), "not near uniform at small a"
    assert d.probs.shape == (len(d.scales), 5) and bool((d.probs[:, 0] == d.p_max).all())


def check_norms(d: figures.NormsData, target: Target) -> None:
    """TR-1: per prompt, |h| after the last block >= 4x after the first; more than half the blocks raise it."""
    assert len(d.prompts) >= 4
    for prompt, n in zip(d.prompts, d.norms, strict=True):
        blocks = len(n) - 1
        assert n[-1] >= 4 * n[1], (prompt, n)
        assert sum(b > a for a, b in itertools.pairwise(n)) > blocks / 2, (prompt, n)
    ids = target.tokenizer().encode(d.prompts[0])
    row = target.embedding_matrix()[ids[-1]].double().norm()  # depth 0 is the last token's embedding row
    assert abs(d.norms[0][0] - float(row)) <= 1e-6 * float(row)


def check_embedding_norms(d: figures.EmbeddingNormsData, target: Target) -> None:
    """TR-2: >= 70% of rows within 20% of the median, a tail of 0-5% beyond 1.5x, the longest >= 2x."""
    r = d.ratios
    assert float(((r - 1).abs() <= 0.2).double().mean()) >= 0.70
    tail = float(((r > 1.5) | (r < 1 / 1.5)).double().mean())
    assert 0 < tail <= 0.05
    assert d.longest[0][1] >= 2.0
    norms = torch.linalg.vector_norm(target.embedding_matrix().double(), dim=1)
    assert r.numel() == target.vocab_size
    torch.testing.assert_close(d.median, float(norms.median()), atol=0, rtol=1e-12)
    tok = target.tokenizer()
    for (name, ratio), i in zip(d.longest, norms.topk(len(d.longest)).indices.tolist(), strict=True):
        assert name == repr(tok.decode([i])) and abs(ratio - float(norms[i]) / d.median) < 1e-9 and ratio > 1.5
    for (name, ratio), i in zip(d.shortest, (-norms).topk(len(d.shortest)).indices.tolist(), strict=True):
        assert name == repr(tok.decode([i])) and abs(ratio - float(norms[i]) / d.median) < 1e-9 and ratio < 1 / 1.5


def check_lens(d: figures.LensData, target: Target) -> None:
    """TR-3: the final token is rank 0 at the last layer and ranked better late than early; TR-4: " Mary" beats
    " John" after the IOI prompt; the plane keeps the two names' logits."""
    tok = target.tokenizer()
    z = target.logits(torch.tensor([tok.encode(d.prompt)]))[0, -1].double()
    ids = [tok.encode(name)[0] for name in d.names]
    assert d.final_token == repr(tok.decode([int(z.argmax())])) == repr(" Mary")
    blocks = len(d.ranks) - 1
    assert d.ranks[-1] == 0
    assert statistics.median_low(d.ranks[-math.ceil(blocks / 4):]) < statistics.median_low(d.ranks[1:blocks // 2 + 1])
    p_final = torch.tensor(d.probs[-1], dtype=torch.float64)
    torch.testing.assert_close(p_final, torch.softmax(z, 0).max(), atol=F32.atol, rtol=F32.rtol)
    torch.testing.assert_close(d.name_logits[-1], z[ids], atol=F32.atol, rtol=F32.rtol)
    assert d.name_logits[-1, 0] > d.name_logits[-1, 1]
    U, _ = target.unembedding()
    lengths = U.double()[:, ids].norm(dim=0)  # [2]
    torch.testing.assert_close(d.directions.norm(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert abs(float(d.directions[0, 1])) < 1e-12 and float(d.directions[0, 0]) > 0, "first axis is not along Mary"
    # a vector of the plane keeps its dot products: coordinates . direction x |u| == the lens logit
    torch.testing.assert_close(d.plane @ d.directions.T * lengths, d.name_logits, atol=1e-9, rtol=1e-9)


def check_attention(d: figures.AttentionData, target: Target) -> None:
    """ATT-3: the last query's weights are >= 0 and sum to 1 in every block and head; they match the weights
    rebuilt from the target's queries and keys (softmax of q . k / sqrt(d_head), ATT-2)."""
    tok = target.tokenizer()
    ids = torch.tensor([tok.encode(d.prompt)])
    assert d.tokens == [repr(tok.decode([i])) for i in ids[0].tolist()]
    assert bool((d.weights >= 0).all())
    sums = d.weights.sum(dim=-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=F32.atol, rtol=F32.rtol)
    for layer in (0, d.weights.shape[0] - 1):
        q, k = target.queries_keys(layer, ids)  # [1, heads, T, d_head], [1, kv_heads, T, d_head]
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = (q[0, :, -1:] @ k[0].transpose(-1, -2))[:, 0].double() / math.sqrt(q.shape[-1])  # [heads, T]
        torch.testing.assert_close(d.weights[layer], torch.softmax(scores, -1), atol=F32.atol, rtol=F32.rtol)


CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "1-toy-softmax": check_toy, "2-temperature": check_temperature, "3-length": check_length,
    "4-residual-norms": check_norms, "5-embedding-norms": check_embedding_norms, "6-logit-lens": check_lens,
    "7-attention": check_attention,
}


def test_every_figure_has_a_check() -> None:
    assert set(CHECKS) == set(STEMS)


def test_toy_data_satisfies_out_2(toy: tuple[Any, list[Path]]) -> None:
    check_toy(toy[0], None)


@pytest.mark.parametrize("stem", STEMS[1:])
def test_data_satisfies_its_claims(drawn: dict[str, tuple[Any, list[Path]]], model: Target, stem: str) -> None:
    CHECKS[stem](drawn[stem][0], model)


# ------------------------------------------------------------------------------ the checks reject wrong data


def _reversed(t: torch.Tensor) -> torch.Tensor:
    return t.flip(0)


WRONG: dict[str, Callable[[Any], Any]] = {
    # the source's illustrative probabilities instead of the exact softmax
    "1-toy-softmax": lambda d: dataclasses.replace(
        d, probs=torch.tensor([d.illustrative[n] for n in d.names], dtype=torch.float64)),
    # the curve drawn against the temperatures in reverse
    "2-temperature": lambda d: dataclasses.replace(d, p_max=_reversed(d.p_max), entropy=_reversed(d.entropy)),
    # the entropy read in reverse order of scale
    "3-length": lambda d: dataclasses.replace(d, entropy=_reversed(d.entropy)),
    # norms by depth listed backwards (a bug reading the states from the output end)
    "4-residual-norms": lambda d: dataclasses.replace(d, norms=[n[::-1] for n in d.norms]),
    # every row rescaled to the median length (a normalised-embedding export)
    "5-embedding-norms": lambda d: dataclasses.replace(d, ratios=torch.ones_like(d.ratios)),
    # the lens read with the layers in reverse
    "6-logit-lens": lambda d: dataclasses.replace(d, ranks=d.ranks[::-1], probs=d.probs[::-1]),
    # weights off by a constant factor (a normalisation dropped or applied twice)
    "7-attention": lambda d: dataclasses.replace(d, weights=d.weights * 1.5),
}


def test_toy_check_rejects_wrong_data(toy: tuple[Any, list[Path]]) -> None:
    with pytest.raises(AssertionError):
        check_toy(WRONG["1-toy-softmax"](toy[0]), None)


@pytest.mark.parametrize("stem", STEMS[1:])
def test_checks_reject_wrong_data(drawn: dict[str, tuple[Any, list[Path]]], model: Target, stem: str) -> None:
    with pytest.raises(AssertionError):
        CHECKS[stem](WRONG[stem](drawn[stem][0]), model)
