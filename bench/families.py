"""Correct models the spec has never seen: the verdict on every transformers family below, in one table.

    python bench/families.py [--profile ci] [--only NAME ...] [-j N]

Each entry is a transformers family (or a variant of one: a scaled rotary embedding, QK-norm switched on, sdpa)
built by transformers itself from a tiny config -- the sizes below plus the family's own fields -- with weights drawn
as spec.targets.hf_presets.random_hf_model draws them. None has a preset or a converter here. The whole catalog runs
on each through spec.check.Check, as ``PYTHONPATH=. next-token-spec check bench.families:<name>`` would from the
repository's root (a factory target), with no expected deviations. These are correct models: a failed claim in the
table is a false alarm of the spec, or a transformers bug, and is the first thing to look at. Session 11 measured 32
such failures in 10 of these and their kin (a rope-scaled Llama, QK-norm, Granite's multipliers, Gemma 2's soft
caps, Cohere's logit scale, GPT-OSS's sinks, BitNet's sub-norm); each became a declared departure
(spec.target.Departures) or a fix. Seconds stretch with the load (printed); the verdicts do not.

Open (the table shows them failing, on purpose):
- jamba, falcon_h1 (Mamba hybrids): GEN-2 on a left-padded row, cached decoding against one full pass. Not a false
  alarm: plain transformers calls show it (batch [[0, 5], [0, 7]], mask [[1, 1], [0, 1]]; row 1's full pass equals
  the row alone within 2e-6, its cached step -- prefill the pad, then one token -- differs by 1.36 on Jamba and 0.02
  on Falcon-H1), so transformers' cached Mamba path with left padding is what GEN-2 catches.
- minimax: RES-1 and BLK-1 (its residual is alpha h + beta sublayer(h), a departure not declared yet), SOFT-7 and
  GEN-2 (lightning attention, linear rather than softmax, in some layers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench.families:<name> must import in check's worker processes too
    sys.path.insert(0, str(ROOT))

TINY: dict[str, Any] = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
HEAD8 = {"head_dim": 8}
MOE = {"num_local_experts": 4, "num_experts_per_tok": 2}
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}

# name: (model_type, the family's own fields, attention implementation)
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "qwen3": ("qwen3", HEAD8, "eager"),
    "qwen3_sdpa": ("qwen3", HEAD8, "sdpa"),
    "qwen3_moe": ("qwen3_moe", HEAD8 | {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
                  "eager"),
    "qwen2_moe": ("qwen2_moe", {"moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
                                "num_experts": 4, "num_experts_per_tok": 2}, "eager"),
    "llama_sdpa": ("llama", {}, "sdpa"),
    "llama_biases_tied": ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}, "eager"),
    "llama_rope_llama3": ("llama", {"rope_scaling": LLAMA3_ROPE}, "eager"),
    "llama_rope_yarn": ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                   "original_max_position_embeddings": 16}}, "eager"),
    "llama4_text": ("llama4_text", HEAD8 | {"num_local_experts": 2, "intermediate_size_mlp": 64,
                                            "attention_chunk_size": 64}, "eager"),
    "gemma2": ("gemma2", HEAD8 | {"sliding_window": 64}, "eager"),
    "gemma3_text": ("gemma3_text", HEAD8 | {"query_pre_attn_scalar": 8, "sliding_window": 64}, "eager"),
    "cohere": ("cohere", {}, "eager"),
    "cohere2": ("cohere2", {"sliding_window": 64}, "eager"),
    "granite": ("granite", {"attention_multiplier": 0.3, "residual_multiplier": 0.5, "logits_scaling": 4.0,
                            "embedding_multiplier": 2.0}, "eager"),
    "granitemoe": ("granitemoe", MOE, "eager"),
    "olmo": ("olmo", {}, "eager"),
    "olmo2": ("olmo2", {}, "eager"),
    "olmo3": ("olmo3", {"sliding_window": 64}, "eager"),
    "stablelm": ("stablelm", {"num_key_value_heads": 4}, "eager"),
    "stablelm_qk_layernorm": ("stablelm", {"num_key_value_heads": 4, "qk_layernorm": True,
                                           "use_parallel_residual": True}, "eager"),
    "phi_qk_layernorm": ("phi", {"qk_layernorm": True, "partial_rotary_factor": 0.5}, "eager"),
    "starcoder2": ("starcoder2", {"sliding_window": None}, "eager"),
    "mixtral": ("mixtral", MOE | {"sliding_window": None}, "eager"),
    "smollm3": ("smollm3", {}, "eager"),
    "nemotron": ("nemotron", HEAD8, "eager"),
    "glm": ("glm", HEAD8, "eager"),
    "glm4": ("glm4", HEAD8, "eager"),
    "persimmon": ("persimmon", {}, "eager"),
    "gpt_oss": ("gpt_oss", HEAD8 | MOE | {"sliding_window": 64}, "eager"),
    "exaone4": ("exaone4", HEAD8 | {"sliding_window": 64}, "eager"),
    "helium": ("helium", HEAD8, "eager"),
    "ernie4_5": ("ernie4_5", HEAD8, "eager"),
    "apertus": ("apertus", HEAD8, "eager"),
    "seed_oss": ("seed_oss", HEAD8, "eager"),
    "hunyuan_v1_dense": ("hunyuan_v1_dense", HEAD8, "eager"),
    "arcee": ("arcee", {}, "eager"),
    "bitnet": ("bitnet", {}, "eager"),
    "lfm2": ("lfm2", {}, "eager"),
    "jamba": ("jamba", {"num_experts": 2, "num_experts_per_tok": 1, "attn_layer_period": 2, "attn_layer_offset": 1,
                        "expert_layer_period": 2, "expert_layer_offset": 1, "mamba_d_state": 4, "mamba_dt_rank": 4},
              "eager"),
    "falcon_h1": ("falcon_h1", HEAD8 | {"mamba_d_ssm": 32, "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_d_state": 4,
                                        "mamba_n_groups": 1}, "eager"),
    "minimax": ("minimax", HEAD8 | {"num_local_experts": 2, "num_experts_per_tok": 1}, "eager"),
    "gpt2_scale_by_layer": ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "eager"),
    "falcon_alibi": ("falcon", {"alibi": True, "num_kv_heads": 4}, "eager"),
    "gpt_neox_sequential": ("gpt_neox", {"use_parallel_residual": False, "rotary_pct": 0.25}, "eager"),
}


def build(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """The family's causal LM from its tiny config, weights from hf_presets.randomize_ (seed 0), in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from spec.targets.hf_presets import randomize_

    model_type, extra, attention = FAMILIES[name]
    config = AutoConfig.for_model(model_type, **(TINY | extra))
    torch.manual_seed(0)  # transformers' own init of what randomize_ does not reach
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=dtype)
    return randomize_(model, 0).eval().to(device)


def _factory(name: str) -> Any:
    def factory(device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
        return build(name, device, dtype)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"bench.families:{name}: {FAMILIES[name][0]} from a tiny config"
    return factory


for _name in FAMILIES:  # one factory per entry, so each is a target: next-token-spec check bench.families:<name>
    globals()[_name] = _factory(_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="ci", help="Hypothesis profile (default ci)")
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(FAMILIES), metavar="NAME",
                        help="these entries only (default: all)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="worker processes per family (default 2)")
    args = parser.parse_args()

    from spec import profiles
    from spec.catalog import ordered
    from spec.check import Check
    from spec.errors import InputError
    from spec.runner import FAILING

    profiles.load(args.profile)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min); profile {args.profile}, -j {args.jobs}")
    print(f"| {'family':24} | passed | partly | not exposed | other | failed claims | seconds |")
    print(f"|{'-' * 26}|--------|--------|-------------|-------|---------------|---------|")
    false_alarms = 0
    for name in args.only or FAMILIES:
        started = time.perf_counter()
        try:
            check = Check(f"bench.families:{name}", expectations=None, profile=args.profile)
        except InputError as exc:  # this transformers cannot build or call the entry: a row, not the end of the sweep
            print(f"| {name:24} | not built: {exc}", flush=True)
            continue
        results = check.run_all(ordered(), jobs=args.jobs)
        counts = Counter(r.status for r in results)
        failed = [r.claim for r in results if r.status in FAILING]
        false_alarms += len(failed)
        other = sum(counts.values()) - counts["passed"] - counts["partly run"] - counts["not exposed"] - len(failed)
        print(f"| {name:24} | {counts['passed']:6} | {counts['partly run']:6} | {counts['not exposed']:11} | "
              f"{other:5} | {', '.join(failed) or '-':13} | {time.perf_counter() - started:7.1f} |", flush=True)
    print(f"false alarms (failed claims on correct models): {false_alarms}")
    sys.exit(1 if false_alarms else 0)


if __name__ == "__main__":
    main()
