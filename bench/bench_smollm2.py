"""Speed of the reference beside HuggingFace transformers on the same SmolLM2 weights, in one run.

    python bench/bench_smollm2.py [--prefill 128] [--decode 64] [--repeats 3] [--threads N]

Both models hold the same dequantized float32 weights (the GGUF file of SmolLM2-135M-Instruct)
on the CPU; HF runs its eager attention. Four things are timed, best of N each:

- prefill: one forward pass over the prompt, logits for every position on both sides;
- decode: cached greedy generation of ``--decode`` tokens minus generation of one token, so
  what is left is the ``decode - 1`` cached one-token steps alone (each side's own generate
  loop, prompt pass excluded; greedy, no early stop, HF with use_cache=True).

The timed calls alternate between the two models, so load from other processes on a
shared machine falls on both. Prints the times, the ratios (> 1 means the reference is
faster), whether the two greedy continuations agree, the machine's memory-copy bandwidth
and the decode roofline it implies (weight bytes read per token / bandwidth).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, the functions taking turns in every round."""
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def copy_bandwidth(n_bytes: int = 1 << 28, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write counted)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)
    t = interleaved_best({"copy": lambda: dst.copy_(src)}, repeats)["copy"]
    return 2 * n_bytes / t


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.decode < 2:
        parser.error("--decode must be >= 2 (decode speed is generate(n) - generate(1))")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

    import reference
    from spec.targets.smollm2 import load_hf, load_reference

    ref = load_reference("cpu", torch.float32).model
    hf = load_hf("cpu", torch.float32).model
    ids = torch.randint(0, ref.cfg.vocab_size, (1, args.prefill), generator=torch.Generator().manual_seed(0))

    def hf_generate(n: int) -> torch.Tensor:
        return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    with torch.no_grad():
        torch.testing.assert_close(ref(ids).logits, hf(input_ids=ids).logits, atol=1e-3, rtol=1e-3)
        ref_tokens = reference.generate(ref, ids, args.decode)[0, args.prefill:]
        hf_tokens = hf_generate(args.decode)[0, args.prefill:]
        t = interleaved_best({
            "ref prefill": lambda: ref(ids), "hf prefill": lambda: hf(input_ids=ids),
            "ref gen 1": lambda: reference.generate(ref, ids, 1), "hf gen 1": lambda: hf_generate(1),
            "ref gen n": lambda: reference.generate(ref, ids, args.decode),
            "hf gen n": lambda: hf_generate(args.decode),
        }, args.repeats)
    steps = args.decode - 1
    ref_step = max(t["ref gen n"] - t["ref gen 1"], 1e-9) / steps  # seconds per cached one-token step
    hf_step = max(t["hf gen n"] - t["hf gen 1"], 1e-9) / steps
    agree = int((ref_tokens == hf_tokens).long().cumprod(0).sum())
    bw = copy_bandwidth()
    weight_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    roofline = bw / weight_bytes

    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, float32, CPU, best of {args.repeats}")
    print(f"prefill {args.prefill} tokens: reference {t['ref prefill']:.3f} s, HF {t['hf prefill']:.3f} s, "
          f"ratio HF/reference {t['hf prefill'] / t['ref prefill']:.2f}x")
    print(f"cached greedy decode ({steps} one-token steps after a {args.prefill}-token prompt): "
          f"reference {1e3 * ref_step:.1f} ms/token = {1 / ref_step:.1f} tok/s, "
          f"HF {1e3 * hf_step:.1f} ms/token = {1 / hf_step:.1f} tok/s, ratio reference/HF {hf_step / ref_step:.2f}x")
    print(f"greedy tokens: the first {agree} of {args.decode} agree between reference and HF")
    print(f"memory-copy bandwidth {bw / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.0f} MB; "
          f"decode roofline {roofline:.1f} tok/s (reference at {100 / ref_step / roofline:.0f}% of it)")


if __name__ == "__main__":
    main()
