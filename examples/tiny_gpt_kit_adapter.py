"""examples/tiny_gpt.py as a spec target through the adapter kit (spec.kit): attribute paths and the model's own
callables, no Target subclass. examples/tiny_gpt_adapter.py is the same model adapted by hand, converter included.

    PYTHONPATH=. next-token-spec check examples.tiny_gpt_kit_adapter:tiny_gpt --expectations examples/expectations
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from examples.tiny_gpt import GPT, ByteTokenizer, Cache, GPTConfig, SelfAttention, probabilities, sample
from reference.config import ModelConfig
from spec.kit import Layout, ModuleTarget


def tiny_gpt(device: str = "cpu", dtype: torch.dtype = torch.float32) -> ModuleTarget:
    # std 1/sqrt(width), not nanoGPT's 0.02: tiny random models need spread, or a bug moves logits < the tolerance
    gpt = GPT(GPTConfig()).to(device=device, dtype=dtype).init_weights(0, std=GPTConfig.n_embd ** -0.5).eval()
    return ModuleTarget(
        gpt, name="tiny-gpt-kit", version="examples/tiny_gpt.py", logits=gpt, max_positions=gpt.cfg.block_size,
        embedding="wte.weight", unembedding="lm_head", blocks="h", final_norm="ln_f",
        sublayers=Layout(norm1="ln_1", attention="attn", norm2="ln_2", mlp="mlp", parallel=gpt.cfg.parallel),
        attention_weights="attn.attn_dropout",  # nanoGPT's dropout on the attention pattern: its output is it
        queries_keys=functools.partial(queries_keys, gpt), config=functools.partial(config, gpt),
        cached_forward=lambda: functools.partial(gpt, cache=Cache(gpt.cfg.n_layer)), generate=gpt.generate,
        softmax=probabilities, filtered_probabilities=probabilities, sample=sample, tokenizer=ByteTokenizer())


@torch.no_grad()
def queries_keys(gpt: GPT, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
    """c_attn's output in one forward pass, split into heads as the model splits it (learned positions are added at
    the input: nothing turns q and k): q [B, H, T, hs], k [B, H_kv, T, hs]."""
    attn: SelfAttention = gpt.h[layer].attn  # type: ignore[union-attr,assignment]
    seen: list[Tensor] = []
    hook = attn.c_attn.register_forward_hook(lambda _m, _args, out: seen.append(out))
    try:
        gpt(ids)
    finally:
        hook.remove()
    widths = [attn.n_head * attn.hs, attn.n_kv * attn.hs, attn.n_kv * attn.hs]
    q, k, _ = (t.view(*ids.shape, -1, attn.hs).transpose(1, 2) for t in seen[0].split(widths, dim=-1))
    return q, k


def config(gpt: GPT) -> ModelConfig:
    c = gpt.cfg
    return ModelConfig(
        vocab_size=c.vocab_size, d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_kv_head,
        d_head=c.head_size, d_mlp=c.mlp_size or 4 * c.n_embd, mlp_activation=c.activation,  # type: ignore[arg-type]
        mlp_bias=c.mlp_bias, norm="layernorm", norm_eps=1e-5, norm_bias=c.ln_bias,
        positions="learned" if c.positions else "none", max_positions=c.block_size, attn_qkv_bias=c.qkv_bias,
        attn_out_bias=c.proj_bias, parallel_residual=c.parallel, tied_embeddings=c.tied, unembed_bias=c.head_bias)
