"""The implementation under test, seen through one small protocol.

A target must give logits for a batch of token IDs. Everything else is optional:
a target exposes a capability by overriding the method of that name. A claim that
needs a capability the target lacks is reported as "not exposed", naming it —
never as passed.

Write an adapter for your own implementation by subclassing ``Target`` and
overriding ``logits`` plus whatever else you have; see README.md, section "Your own implementation", and
docs/adapters.md, section "The protocol" (every capability: shapes, dtypes, what each claim relies on).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from reference.config import ModelConfig
    from reference.model import Transformer


class NotExposed(Exception):
    """The target does not offer the named capability."""

    def __init__(self, capability: str, why: str = "") -> None:
        super().__init__(capability + (f": {why}" if why else ""))
        self.capability = capability
        self.why = why


# set by spec.runner while a claim runs: the capabilities some part of an example could not use, with why
SKIPPED_PARTS: ContextVar[dict[str, str] | None] = ContextVar("skipped_parts", default=None)


def skip_part(exc: NotExposed) -> None:
    """Record that one part of a claim's example needs what the target lacks; the rest of the example counts.

    For a claim with two halves, e.g. GEN-3's padded logits (checked) and padded ``generate`` (a
    generate that takes no attention mask): raising NotExposed would discard the example, and the
    half that was checked with it. The runner names the skipped part in the result's detail.
    """
    parts = SKIPPED_PARTS.get()
    if parts is not None:
        parts[exc.capability] = str(exc)


# set by spec.runner while a claim runs: what the target chose where the sources leave a choice open, and facts
# about its weights a claim set aside (topic -> {observation: how many times})
NOTES: ContextVar[dict[str, dict[str, int]] | None] = ContextVar("notes", default=None)


def note(topic: str, observation: str) -> None:
    """Report, as information and never as a failure, what the target did where the sources leave it free.

    E.g. ``note("greedy tie", "not the lowest ID")`` or ``note("top-k tie at the k-th place", "keeps all tied")``,
    or a fact about the weights a claim excluded from its property (``note("zero rows of E", "[2]")``). The runner
    gathers the observations per topic with their counts into the result, shown beside the table and in every
    report. Outside a run it does nothing.
    """
    notes = NOTES.get()
    if notes is not None:
        seen = notes.setdefault(topic, {})
        seen[observation] = seen.get(observation, 0) + 1


class Tokenizer(Protocol):
    """What a claim needs of a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def id_to_token(self, i: int) -> str: ...


# The optional capabilities, each the name of a Target method, with what it means.
CAPABILITIES: dict[str, str] = {
    "embedding_matrix": "the input embedding table E [V, d]",
    "embed": "the vectors entering the first block for given ids [B, T, d]",
    "unembedding": "the output matrix U [d, V] and bias b [V] or None",
    "final_norm": "the final norm applied to residual states",
    "residual_states": "the residual stream before each block and after the last (before the final norm)",
    "attention_weights": "each layer's attention probabilities [B, heads, T, T]",
    "queries_keys": "a layer's queries and keys, after positions are applied [B, heads, T, d_head]",
    "attention_values": "a layer's values [B, kv_heads, T, d_head] and each head's mix of them before W_O "
                        "[B, heads, T, d_head], as the forward pass computed them",
    "sublayers": "one block's norms, attention and MLP as functions of the residual stream",
    "decode": "incremental decoding with a KV cache",
    "softmax": "the target's own softmax with temperature",
    "filtered_probabilities": "the target's sampling distribution after temperature, top-k and top-p",
    "sample": "the target's own sampler, driven by a torch.Generator",
    "generate": "the target's own greedy generation loop",
    "tokenizer": "the target's tokenizer",
    "config": "the target's architecture as a reference ModelConfig",
    "tied_embeddings": "whether the model declares its output matrix tied to its embedding table (U = E^T), as "
                       "HF's config.tie_word_embeddings does",
    "build": "fresh models of this implementation for any drawn config",
    "train_step": "one gradient step of this implementation on a loss",
    "reference_model": "a converter from this target's weights to the reference",
    "trained": "the weights come from real training (not random)",
}


@dataclass(frozen=True)
class Departures:
    """What an architecture declares where it departs from the documents' formulas; each default is the documents'.

    Real architectures change a constant of a documented formula on purpose, and say so in their configuration:
    Granite's attention, residual and logit multipliers, Gemma 2's query_pre_attn_scalar and soft caps, Cohere's
    logit_scale, GPT-2's scale_attn_weights = False; or add a step the documents do not have: Qwen 3, OLMo 2 and
    Gemma 3 normalise queries and keys after their projections; GPT-OSS gives each head's softmax a learned sink
    logit, so the weights over positions sum to less than 1. The claims that the change touches (ATT-1 .. ATT-5,
    SOFT-7, OUT-1, RES-1, BLK-1) check the documents' formula with the declared constant or step, and report it
    (:func:`note`), so a correct model of such an architecture passes and a port that ignores its own declaration
    fails, as a model that departs without declaring it does. Only a declaration counts, never what the outputs
    seem to fit: a scale read off the weights would make any wrong scale pass.
    """

    attn_scale: float | None = None  # the score scale, instead of 1/sqrt(d_head) (ATT-2)
    attn_softcap: float | None = None  # scores -> c * tanh(scores / c) before the mask (ATT-2)
    attn_scale_by_layer: bool = False  # the score scale further divided by layer + 1, layers counted from 0 (ATT-2)
    logit_scale: float = 1.0  # logits multiplied by it (OUT-1)
    logit_softcap: float | None = None  # logits -> c * tanh(logits / c), after the scale (OUT-1)
    residual_scale: float = 1.0  # each sublayer's output multiplied by it before it is added (RES-1, BLK-1)
    qk_norm: bool = False  # queries and keys normalised after their projections (ATT-1 checks the projections)
    attn_sinks: bool = False  # each head's softmax has one more, learned logit with no value (GPT-OSS): ATT-1..5
    attn_sub_norm: bool = False  # the heads' mix is normalised before W_O (BitNet): ATT-1 and SOFT-7 skip a half

    def head_output_not_affine(self, part: str) -> NotExposed | None:
        """Why ``part`` of a claim cannot hold, where it needs a one-token attention output to be the token's value
        through W_O (ATT-1's values half, SOFT-7's scaling half): a sink takes weight from it, or a norm sits before
        W_O. None where nothing declared stands in the way."""
        if self.attn_sinks:
            return NotExposed("attention_sinks", f"{part}: with attention sinks (declared) a one-token attention "
                                                 "output is its value through W_O times a weight below 1 that moves "
                                                 "with the input")
        if self.attn_sub_norm:
            return NotExposed("attn_sub_norm", f"{part}: with a norm of the heads' mix before W_O (declared) a "
                                               "one-token attention output is W_O norm(v), not affine in the input")
        return None

    def declared(self) -> dict[str, object]:
        """The fields that differ from the documents' defaults, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


class Target:
    """Base class of every target; override ``logits`` and any optional capability."""

    name: str = "target"
    version: str = ""
    tolerance: str = "float32"  # a key of spec.tolerance.CLASSES
    trained: ClassVar[bool] = False
    vocab_size: int
    max_positions: int = 1 << 30
    # At most this many Hypothesis examples per claim (None: the profile's and the claim's own limits). For a
    # target whose forward pass is expensive (a real 135M-parameter model) so that the whole catalog fits a CI
    # budget; claims written for trained weights (needs "trained") keep their own counts. See spec.runner.
    max_examples: int | None = None
    # Explicit examples from real text run before the drawn ones (spec.strategies.REALISTIC): for a target whose
    # few examples per claim must not be Hypothesis's trivial minimal ones (a real trained model). Needs a tokenizer.
    realistic_examples: int = 0
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def check_length(self, positions: int) -> None:
        """ValueError naming the context length when a call needs more positions than ``max_positions``.

        Not a capability: the built-in adapters call it before running their model, because past its context a
        model either fails deep inside with a bare shape or index error (learned positions) or computes on silently
        (rotary, ALiBi, an exported graph), and neither says what was wrong.
        """
        if positions > self.max_positions:
            raise ValueError(f"target {self.name}: {positions} positions asked for, but its context length is "
                             f"{self.max_positions}; give at most {self.max_positions} tokens")

    # -- required -------------------------------------------------------------------
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Next-token logits for every position: ids [B, T] (left-padded where mask is 0) -> [B, T, V]."""
        raise NotImplementedError

    # -- optional -------------------------------------------------------------------
    def embedding_matrix(self) -> Tensor:
        raise NotExposed("embedding_matrix")

    def embed(self, ids: Tensor) -> Tensor:
        raise NotExposed("embed")

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        raise NotExposed("unembedding")

    def final_norm(self, h: Tensor) -> Tensor:
        raise NotExposed("final_norm")

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        raise NotExposed("residual_states")

    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        raise NotExposed("attention_weights")

    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        raise NotExposed("queries_keys")

    def attention_values(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        raise NotExposed("attention_values")

    def sublayers(self, layer: int) -> Sublayers:
        raise NotExposed("sublayers")

    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        """Feed ids[:, :prefill] at once, then one token per step through a KV cache; logits [B, T, V]."""
        raise NotExposed("decode")

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        raise NotExposed("softmax")

    def filtered_probabilities(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                               top_p: float | None = None) -> Tensor:
        raise NotExposed("filtered_probabilities")

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        raise NotExposed("sample")

    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        """Greedy continuation keeping the prompt: [B, T] -> [B, T + max_new_tokens]."""
        raise NotExposed("generate")

    def tokenizer(self) -> Tokenizer:
        raise NotExposed("tokenizer")

    def config(self) -> ModelConfig:
        raise NotExposed("config")

    def tied_embeddings(self) -> bool:
        """Whether the model says it is tied (OUT-3 then holds it to U == E^T bit for bit). Without ``config``
        this is all a claim knows of tying: an untied model whose U happens to equal E^T looks tied."""
        raise NotExposed("tied_embeddings")

    def departures(self) -> Departures:
        """The documented formulas' constants this architecture declares otherwise (:class:`Departures`). Not a
        capability: a target that says nothing follows the documents. By default, the score scale of ``config``
        where the target exposes one; an adapter of such an architecture overrides this."""
        if "config" in self.capabilities:
            try:
                return Departures(attn_scale=self.config().attn_scale)
            except NotExposed:  # a config this target cannot give after all: nothing declared
                pass
        return Departures()

    def attention_sinks(self, layer: int) -> Tensor:
        """A layer's sink logits [heads], where ``departures().attn_sinks``: each head's softmax over the scores of
        the visible keys has this one more logit, whose probability goes to no value (ATT-2 computes with it)."""
        raise NotExposed("attention_sinks", "the sink logits of each head (departures().attn_sinks)")

    def projections(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """A layer's queries and keys straight out of their projections, before any normalisation and positions,
        [B, T, features]: what ATT-1 checks where ``departures().qk_norm`` says they are normalised afterwards."""
        raise NotExposed("projections", "the queries and keys before their normalisation (departures().qk_norm)")

    def build(self, config: ModelConfig, seed: int = 0) -> Target:
        raise NotExposed("build")

    def buildable(self, config: ModelConfig) -> ModelConfig:
        """The config ``build`` honours for a drawn one: the drawn config itself for a target that builds any; a
        family with a fixed architecture keeps the drawn sizes and returns its own layout. Claims draw through
        this (spec.strategies.built_configs), so they check what can be built instead of rejecting the draw."""
        return config

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        """One SGD step on cross-entropy of predicting ``targets`` [B, T] from ``ids`` [B, T]."""
        raise NotExposed("train_step")

    def reference_model(self) -> Transformer:
        raise NotExposed("reference_model", "no converter for this target")

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[str]:
        """The optional capabilities this target exposes (methods it overrides)."""
        have = {name for name in CAPABILITIES if name != "trained" and _overrides(self, name)}
        if self.trained:
            have.add("trained")
        return frozenset(have)

    def describe(self) -> str:
        return f"{self.name} {self.version}".strip()


class Sublayers(Protocol):
    """One block's parts as functions of x [B, T, d] -> [B, T, d] (claims MLP-2, RES-1, NORM-1, BLK-1)."""

    def norm1(self, x: Tensor) -> Tensor: ...

    def norm2(self, x: Tensor) -> Tensor: ...

    def attention(self, x: Tensor) -> Tensor: ...

    def mlp(self, x: Tensor) -> Tensor: ...

    def block(self, x: Tensor) -> Tensor: ...

    @property
    def parallel(self) -> bool: ...


def _overrides(target: Any, name: str) -> bool:
    return getattr(type(target), name) is not getattr(Target, name)


def sgd_step(model: torch.nn.Module, forward: Callable[[], Tensor], targets: Tensor, lr: float) -> None:
    """One plain SGD step on cross-entropy of ``forward()``'s logits [B, T, V] against ``targets`` [B, T].

    Shared by the targets that implement ``Target.train_step`` on a torch module (claims EMB-4, EMB-6, EMB-7).
    """
    model.train()
    logits = forward()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
    model.eval()
