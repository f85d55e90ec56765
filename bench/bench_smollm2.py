"""Speed of the reference beside HuggingFace transformers on the same SmolLM2 weights, in one run.

    python bench/bench_smollm2.py [--prefill 128] [--decode 64] [--repeats 3] [--threads N]

Both models hold the same dequantized float32 weights (the GGUF file of SmolLM2-135M-Instruct)
on the CPU; HF runs its eager attention. Prints the best-of-N times, the ratios
(HF time / reference time: > 1 means the reference is faster), the machine's memory-copy
bandwidth and the decode roofline it implies (weight bytes read per token / bandwidth).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def copy_bandwidth(n_bytes: int = 1 << 28, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write counted)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    t = best_of(lambda: dst.copy_(src), repeats)
    return 2 * n_bytes / t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import reference
    from spec.targets.smollm2 import load_hf, load_reference

    ref = load_reference("cpu", torch.float32).model
    hf = load_hf("cpu", torch.float32).model
    ids = torch.randint(0, ref.cfg.vocab_size, (1, args.prefill), generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        torch.testing.assert_close(ref(ids).logits, hf(input_ids=ids).logits, atol=1e-3, rtol=1e-3)
        t_ref_prefill = best_of(lambda: ref(ids), args.repeats)
        t_hf_prefill = best_of(lambda: hf(input_ids=ids), args.repeats)
        t_ref_decode = best_of(lambda: reference.generate(ref, ids, args.decode), args.repeats)
        t_hf_decode = best_of(lambda: hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                  max_new_tokens=args.decode, min_new_tokens=args.decode,
                                                  do_sample=False, pad_token_id=0), args.repeats)
    # decode time includes the prefill: subtract it to get per-token decode speed
    ref_tps = args.decode / max(t_ref_decode - t_ref_prefill, 1e-9)
    hf_tps = args.decode / max(t_hf_decode - t_hf_prefill, 1e-9)
    bw = copy_bandwidth()
    weight_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    roofline = bw / weight_bytes

    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, float32, CPU")
    print(f"prefill {args.prefill} tokens: reference {t_ref_prefill:.3f} s, HF {t_hf_prefill:.3f} s, "
          f"ratio HF/reference {t_hf_prefill / t_ref_prefill:.2f}x")
    print(f"cached greedy decode {args.decode} tokens: reference {ref_tps:.1f} tok/s, HF {hf_tps:.1f} tok/s, "
          f"ratio reference/HF {ref_tps / hf_tps:.2f}x")
    print(f"memory-copy bandwidth {bw / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.0f} MB; "
          f"decode roofline {roofline:.1f} tok/s (reference at {100 * ref_tps / roofline:.0f}% of it)")


if __name__ == "__main__":
    main()
