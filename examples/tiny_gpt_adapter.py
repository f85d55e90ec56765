"""examples/tiny_gpt.py as a spec target: the worked adapter of docs/adapters.md.

    PYTHONPATH=. next-token-spec check examples.tiny_gpt_adapter:tiny_gpt --expectations examples/expectations

Everything the model computes is read from the model itself: forward hooks catch what it has no output for
(residual states, attention patterns, queries and keys), and its own cache, generate loop and sampler are called.
The converter (``config``, ``reference_model``) maps its weights to the reference's names as views, so the
reference model it returns computes with, and edits, the live weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from examples.tiny_gpt import GPT, Block, ByteTokenizer, Cache, GPTConfig, probabilities
from examples.tiny_gpt import sample as gpt_sample
from reference.config import ModelConfig
from reference.convert import assemble
from reference.model import Transformer
from spec.target import NotExposed, Sublayers, Target, Tokenizer, sgd_step
from spec.tolerance import for_dtype


def tiny_gpt(device: str = "cpu", dtype: torch.dtype = torch.float32) -> TinyGPTTarget:
    """The factory ``module:factory`` names; ``--device`` and ``--dtype`` arrive as these arguments."""
    return TinyGPTTarget(new_gpt(GPTConfig(), seed=0, device=device, dtype=dtype))


def new_gpt(cfg: GPTConfig, seed: int, device: str | torch.device, dtype: torch.dtype) -> GPT:
    # std 1/sqrt(width), not nanoGPT's 0.02: tiny random models need spread, or a bug moves logits < the tolerance
    return GPT(cfg).to(device=device, dtype=dtype).init_weights(seed, std=1 / math.sqrt(cfg.n_embd)).eval()


class TinyGPTTarget(Target):
    name, version = "tiny-gpt", "examples/tiny_gpt.py"

    def __init__(self, model: GPT) -> None:
        self.model = model.eval()
        self.device, self.dtype = model.wte.weight.device, model.wte.weight.dtype
        self.tolerance = for_dtype(self.dtype).name  # "float32", "float64" or "half"
        self.vocab_size, self.max_positions = model.cfg.vocab_size, model.cfg.block_size

    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(ids, attention_mask)

    def _caught(self, modules: list[nn.Module], ids: Tensor, mask: Tensor | None = None, inputs: bool = False
                ) -> list[Tensor]:
        """What ``modules`` received (inputs) or returned in one forward pass, in call order."""
        seen: list[Tensor] = []
        handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) if inputs else
                   m.register_forward_hook(lambda _m, _args, out: seen.append(out)) for m in modules]
        try:
            with torch.no_grad():
                self.model(ids, mask)
        finally:
            for h in handles:
                h.remove()
        return seen

    def embedding_matrix(self) -> Tensor:
        return self.model.wte.weight.detach()

    def embed(self, ids: Tensor) -> Tensor:
        return self.residual_states(ids)[0]  # what block 0 receives: token rows plus positions 0..T-1

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        head = self.model.lm_head
        return head.weight.detach().T, None if head.bias is None else head.bias.detach()

    @torch.no_grad()
    def final_norm(self, h: Tensor) -> Tensor:
        return self.model.ln_f(h)

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return tuple(self._caught([*self.model.h, self.model.ln_f], ids, attention_mask, inputs=True))

    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        return tuple(self._caught([b.attn.attn_dropout for b in self._blocks()], ids, attention_mask))

    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        attn = self._blocks()[layer].attn
        (qkv,) = self._caught([attn.c_attn], ids)
        q, k, _ = (t.view(*ids.shape, -1, attn.hs).transpose(1, 2)
                   for t in qkv.split([attn.n_head * attn.hs, attn.n_kv * attn.hs, attn.n_kv * attn.hs], dim=-1))
        return q, k  # q [B, H, T, hs], k [B, H_kv, T, hs]; positions were added at the input: nothing turns q, k

    def sublayers(self, layer: int) -> Sublayers:
        return GPTSublayers(self._blocks()[layer])

    def _blocks(self) -> list[Block]:
        return list(self.model.h)  # type: ignore[arg-type]

    @torch.no_grad()
    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        cache = Cache(self.model.cfg.n_layer)
        out = [self.model(ids[:, :prefill], mask[:, :prefill], cache)]
        out += [self.model(ids[:, t:t + 1], mask[:, t:t + 1], cache) for t in range(prefill, ids.shape[1])]
        return torch.cat(out, dim=1)

    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        return self.model.generate(ids, max_new_tokens, attention_mask)

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return probabilities(logits, temperature)

    def filtered_probabilities(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                               top_p: float | None = None) -> Tensor:
        return probabilities(logits, temperature, top_k, top_p)

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        return gpt_sample(logits, generator, temperature, top_k, top_p)

    def tokenizer(self) -> Tokenizer:
        return ByteTokenizer()

    def config(self) -> ModelConfig:
        c = self.model.cfg
        return ModelConfig(
            vocab_size=c.vocab_size, d_model=c.n_embd, n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_kv_head,
            d_head=c.head_size, d_mlp=c.mlp_size or 4 * c.n_embd, mlp_activation=c.activation,  # type: ignore[arg-type]
            mlp_bias=c.mlp_bias, norm="layernorm", norm_eps=1e-5, norm_bias=c.ln_bias,
            positions="learned" if c.positions else "none", max_positions=c.block_size, attn_qkv_bias=c.qkv_bias,
            attn_out_bias=c.proj_bias, parallel_residual=c.parallel, tied_embeddings=c.tied, unembed_bias=c.head_bias)

    def reference_model(self) -> Transformer:
        """A reference Transformer whose parameters are views of this model's: an edit to one is an edit to both."""
        return assemble(self.config(), reference_weights(self.model), device=None, dtype=self.dtype)

    def build(self, config: ModelConfig, seed: int = 0) -> TinyGPTTarget:
        return TinyGPTTarget(new_gpt(gpt_config(config), seed, self.device, self.dtype))

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        sgd_step(self.model, lambda: self.model(ids), targets, lr)

    @property
    def capabilities(self) -> frozenset[str]:
        """A built model whose vocabulary is not the 256 bytes has no tokenizer."""
        have = super().capabilities
        return have if self.vocab_size == ByteTokenizer.vocab_size else have - {"tokenizer"}


class GPTSublayers:
    """One block's parts as functions of x [B, T, d]; attention is causal over positions 0..T-1."""

    def __init__(self, blk: Block) -> None:
        self.blk = blk

    @property
    def parallel(self) -> bool:
        return self.blk.parallel

    @staticmethod
    def _causal(x: Tensor) -> Tensor:
        return torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()[None]

    @torch.no_grad()
    def norm1(self, x: Tensor) -> Tensor:
        return self.blk.ln_1(x)

    @torch.no_grad()
    def norm2(self, x: Tensor) -> Tensor:
        return self.blk.ln_2(x)

    @torch.no_grad()
    def attention(self, x: Tensor) -> Tensor:
        return self.blk.attn(x, self._causal(x))

    @torch.no_grad()
    def mlp(self, x: Tensor) -> Tensor:
        return self.blk.mlp(x)

    @torch.no_grad()
    def block(self, x: Tensor) -> Tensor:
        return self.blk(x, self._causal(x))


def gpt_config(c: ModelConfig) -> GPTConfig:
    """The tiny GPT computing ``c``; NotExposed("build") naming the first field it cannot express."""
    can = [("positions", c.scheme.learned or not c.scheme.sees_order), ("norm", c.norm == "layernorm"),
           ("norm_eps", c.norm_eps == 1e-5), ("mlp_gated", not c.mlp_gated), ("attn_scale", c.attn_scale is None),
           ("embedding_scale", c.embedding_scale == 1.0), ("embedding_norm", not c.embedding_norm)]
    for field, ok in can:
        if not ok:
            raise NotExposed("build", f"the tiny GPT cannot express ModelConfig.{field}={getattr(c, field)!r}")
    return GPTConfig(vocab_size=c.vocab_size, block_size=c.max_positions, n_layer=c.n_layers, n_head=c.n_heads,
                     n_kv_head=c.kv_heads, n_embd=c.d_model, head_size=c.head_dim, mlp_size=c.mlp_dim,
                     positions=c.scheme.learned, activation=c.mlp_activation, parallel=c.parallel_residual,
                     qkv_bias=c.attn_qkv_bias, proj_bias=c.attn_out_bias, mlp_bias=c.mlp_bias, ln_bias=c.norm_bias,
                     tied=c.tied_embeddings, head_bias=c.unembed_bias)


def reference_weights(gpt: GPT) -> dict[str, Tensor]:
    """The GPT's weights under the reference's names; views, no copies (the reference computes x @ W, W [in, out])."""
    w: dict[str, Tensor | None] = {"embed.E": gpt.wte.weight, "final_norm.weight": gpt.ln_f.weight,
                                   "final_norm.bias": gpt.ln_f.bias, "b_U": gpt.lm_head.bias}
    if gpt.wpe is not None:
        w["pos.P"] = gpt.wpe.weight
    if not gpt.cfg.tied:
        w["U"] = gpt.lm_head.weight.T
    for i, blk in enumerate(gpt.h):
        assert isinstance(blk, Block)
        p, a = f"blocks.{i}.", blk.attn
        q, kv = a.n_head * a.hs, a.n_kv * a.hs  # c_attn's rows: q heads, then k heads, then v heads
        for name, rows in (("Q", slice(0, q)), ("K", slice(q, q + kv)), ("V", slice(q + kv, q + 2 * kv))):
            w[p + f"attn.W_{name}"] = a.c_attn.weight[rows].T
            w[p + f"attn.b_{name}"] = None if a.c_attn.bias is None else a.c_attn.bias[rows]
        w |= {p + "attn.W_O": a.c_proj.weight.T, p + "attn.b_O": a.c_proj.bias, p + "N1.weight": blk.ln_1.weight,
              p + "N1.bias": blk.ln_1.bias, p + "N2.weight": blk.ln_2.weight, p + "N2.bias": blk.ln_2.bias,
              p + "mlp.W_in": blk.mlp.c_fc.weight.T, p + "mlp.b_in": blk.mlp.c_fc.bias,
              p + "mlp.W_out": blk.mlp.c_proj.weight.T, p + "mlp.b_out": blk.mlp.c_proj.bias}
    return {name: t for name, t in w.items() if t is not None}
