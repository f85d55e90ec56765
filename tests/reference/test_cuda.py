"""The same seeded model on CPU and CUDA; cached decoding, sampling and device checks on CUDA.

Every test here is marked ``cuda`` and skips with the reason "CUDA not available" on a
machine without a CUDA device.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from reference import PRESETS, build, generate, sample

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available"),
]

NAMES = sorted(PRESETS)

# Logit bounds, CPU vs CUDA, same weights (init_random draws on the CPU in float64):
# - float32: both devices round at ~6e-8 relative but sum in different orders (TF32 is
#   switched off below). On CPU these presets' float32 logits (magnitude <= ~4) are within
#   3e-6 of a float64 run, so two devices differ by < ~6e-6; 1e-4 leaves a margin of >10
#   while a real difference in computation moves logits by > 1e-3.
# - half: on CPU the logits of these presets are within 0.072 (bfloat16, 8 mantissa bits)
#   and 0.011 (float16, 11 bits) of a float64 run. CPU and CUDA round every intermediate
#   separately, so their errors can add: the bounds are ~3x the single-device error.
BOUND = {torch.float32: 1e-4, torch.float16: 4e-2, torch.bfloat16: 0.2}


@pytest.fixture(autouse=True)
def _no_tf32() -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def ids_and_mask(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[0, 0, 3, 14, 15, 92, 65], [35, 89, 79, 32, 38, 46, 26]], device=device)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], device=device)
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_cpu_and_cuda_logits_agree(name: str, dtype: torch.dtype) -> None:
    cfg = PRESETS[name]
    cpu = build(cfg, seed=11, device="cpu", dtype=dtype)
    gpu = build(cfg, seed=11, device="cuda", dtype=dtype)
    for (k, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values(), strict=True):
        assert torch.equal(a, b.cpu()), k  # same seed, same weights on every device
    with torch.no_grad():
        for mask_on in (False, True):
            ids, mask = ids_and_mask("cpu")
            ref = cpu(ids, mask if mask_on else None).logits.float()
            ids, mask = ids_and_mask("cuda")
            out = gpu(ids, mask if mask_on else None).logits
            assert out.device.type == "cuda" and out.dtype == dtype
            assert bool(torch.isfinite(out).all())
            real = ids_and_mask("cpu")[1].bool() if mask_on else torch.ones(2, 7, dtype=torch.bool)
            diff = float((out.float().cpu() - ref).abs()[real].max())
            print(f"cpu-vs-cuda max |logit diff| {name} {dtype} mask={mask_on}: {diff:.3g}")
            assert diff <= BOUND[dtype], f"{name} {dtype}: {diff:.3g} > {BOUND[dtype]}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_cached_decoding_equals_recompute_on_cuda(name: str, dtype: torch.dtype) -> None:
    model = build(PRESETS[name], seed=2, device="cuda", dtype=dtype)
    ids, mask = ids_and_mask("cuda")
    # float64 as in the CPU tests; float32 at 1e-4 for the reason given above BOUND.
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    with torch.no_grad():
        full = model(ids, mask).logits
        cache = model.new_cache(2)
        parts = [model(ids[:, :3], mask[:, :3], cache).logits]
        parts += [model(ids[:, t:t + 1], mask[:, t:t + 1], cache).logits for t in range(3, 7)]
    real = mask.bool()
    torch.testing.assert_close(torch.cat(parts, 1)[real], full[real], **tol)
    out = generate(model, ids, 5, attention_mask=mask)
    assert torch.equal(out, generate(model, ids, 5, attention_mask=mask, use_cache=False))


def test_sampling_on_cuda_with_a_cuda_generator() -> None:
    logits = torch.randn(256, 50, generator=torch.Generator().manual_seed(0)).cuda()
    a = sample(logits, torch.Generator(device="cuda").manual_seed(5), temperature=0.9, top_k=10, top_p=0.9)
    b = sample(logits, torch.Generator(device="cuda").manual_seed(5), temperature=0.9, top_k=10, top_p=0.9)
    assert a.device.type == "cuda" and torch.equal(a, b)
    assert bool((logits.topk(10, dim=-1).indices == a[:, None]).any(-1).all())
    model = build(PRESETS["llama-tiny"], device="cuda")
    out = generate(model, torch.tensor([[1, 2, 3]], device="cuda"), 4, temperature=1.0,
                   generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.shape == (1, 7) and out.device.type == "cuda"


def test_ids_on_cpu_for_a_cuda_model_are_rejected() -> None:
    model = build(PRESETS["gpt2-tiny"], device="cuda")
    with pytest.raises(ValueError, match=r"ids is on cpu but the model's weights are on cuda"):
        model(torch.tensor([[1, 2, 3]]))
    ids = torch.tensor([[1, 2, 3]], device="cuda")
    with pytest.raises(ValueError, match=r"attention_mask is on cpu"):
        model(ids, torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"cache is on cpu"):
        model(ids, cache=build(PRESETS["gpt2-tiny"]).new_cache(1))


def test_a_cpu_generator_with_cuda_logits_is_rejected() -> None:
    logits = torch.randn(2, 5, device="cuda")
    with pytest.raises(ValueError, match=r"generator is on cpu but logits are on cuda"):
        sample(logits, torch.Generator().manual_seed(0), temperature=1.0)
