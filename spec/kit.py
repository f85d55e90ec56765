"""The adapter kit: a spec target from a torch module, a few attribute paths and the callables it already has.

A hand-written adapter (examples/tiny_gpt_adapter.py) spends most of its lines on glue every torch model needs
alike: forward hooks for the residual stream, the block's parts as functions, an SGD step, the embedding tables
as live tensors. ``ModuleTarget`` derives all of that from names::

    target = ModuleTarget(gpt, logits=lambda ids, mask: gpt(ids, mask), embedding="wte.weight",
                          unembedding="lm_head", blocks="h", final_norm="ln_f",
                          sublayers=Layout(norm1="ln_1", attention="attn", norm2="ln_2", mlp="mlp"))

Paths are dotted attribute paths on the module (``"transformer.h"``, ``"h.0.attn"``), resolved when the target is
made (a missing one is a ``spec.errors.InputError`` naming it) and again on each call, so the target always reads the
live module. What the kit derives:

========================  ===================================================================================
capability                derived from
========================  ===================================================================================
``logits``                the ``logits`` callable, under ``torch.no_grad``
``embedding_matrix``      ``embedding``: a tensor [V, d] or an ``nn.Embedding``; a detached view, never a copy
``unembedding``           ``unembedding``: an ``nn.Linear`` head (U = weight.T, its bias), an ``nn.Embedding``,
                          or a tensor [V, d] as both store it (bias from ``unembedding_bias``); views
``residual_states``       ``blocks``: forward pre-hooks catch each block's input; the last state is the final
                          norm's input where ``final_norm`` is given, else the last block's output
``embed``                 ``residual_states(ids)[0]``: what the first block receives
``final_norm``            the ``final_norm`` module, called
``attention_weights``     ``attention_weights``: a path inside each block whose output is the weights [B, H, T, T]
``sublayers``             ``sublayers``: a ``Layout`` naming the block's norms, attention and MLP (paths inside a
                          block) and its wiring; spec.targets.hf_glass.HookedSublayers calls the norms and MLP
                          directly and runs attention and the block inside a forward pass of the model on a
                          dummy input of the same shape, with hooks substituting x (the model's own positions
                          0..T-1 and causal mask apply)
``decode``                ``cached_forward``: a factory of steppers, one per decode, each holding a fresh cache
``train_step``            ``spec.target.sgd_step`` on the ``logits`` callable with autograd on
``device``, ``dtype``     the module's first parameter; ``tolerance`` from the dtype unless given
========================  ===================================================================================

Everything else is passed through as given (``queries_keys``, ``attention_values``, ``softmax``,
``filtered_probabilities``, ``sample``, ``generate``, ``tokenizer``, ``config``, ``reference_model``, ``build``,
``buildable``), each a callable
with the ``Target`` method's signature (the tokenizer an object). What is neither derived nor given stays
*not exposed*: ``capabilities`` lists exactly what the target has. docs/adapters.md, "The adapter kit".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from spec.errors import InputError
from spec.target import NotExposed, Sublayers, Target, Tokenizer, sgd_step
from spec.targets.hf_glass import HookedSublayers, Layout
from spec.tolerance import for_dtype

if TYPE_CHECKING:
    from reference.config import ModelConfig
    from reference.model import Transformer

__all__ = ["Layout", "ModuleTarget", "Stepper", "resolve_path"]

# ids [B, t], the mask of those t tokens (bool [B, t]) -> their logits [B, t, V]; remembers what it was fed
Stepper = Callable[[Tensor, Tensor], Tensor]


def resolve_path(root: Any, path: str, what: str = "path") -> Any:
    """``root.a.b.c`` for ``path`` "a.b.c" (a number indexes a ModuleList: "h.0.attn"); an InputError naming the
    parameter ``what``, the path and the first step that is missing."""
    obj = root
    for i, part in enumerate(path.split(".")):
        if not part or not hasattr(obj, part):
            done = ".".join(path.split(".")[:i])
            where = type(root).__name__ + (f".{done}" if done else "")
            raise InputError(f"{what}={path!r}: {where} ({type(obj).__name__}) has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def _hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    """A block's input hidden states: its first positional argument, or the ``hidden_states`` keyword."""
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, Tensor):
        raise NotExposed("residual_states", "a block was called without its hidden states as the first argument "
                                            "or the hidden_states keyword")
    return x


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, tuple | list) else out  # type: ignore[no-any-return]


class ModuleTarget(Target):
    """A ``Target`` for a torch module, derived from attribute paths and callables (module docstring).

    Only ``model`` and ``logits`` are required. ``logits(ids, attention_mask)`` -> [B, T, V] is the model's own
    forward (ids int64 [B, T], mask [B, T] long or bool or None, left padding); it must leave autograd alone (the
    kit calls it under ``torch.no_grad`` for inference and with gradients for ``train_step``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        logits: Callable[[Tensor, Tensor | None], Tensor],
        embedding: str | None = None,
        unembedding: str | None = None,
        unembedding_bias: str | None = None,
        blocks: str | None = None,
        final_norm: str | None = None,
        sublayers: Layout | None = None,
        attention_weights: str | None = None,
        cached_forward: Callable[[], Stepper] | None = None,
        queries_keys: Callable[[int, Tensor], tuple[Tensor, Tensor]] | None = None,
        attention_values: Callable[[int, Tensor], tuple[Tensor, Tensor]] | None = None,
        softmax: Callable[[Tensor, float], Tensor] | None = None,
        filtered_probabilities: Callable[[Tensor, float, int | None, float | None], Tensor] | None = None,
        sample: Callable[[Tensor, torch.Generator, float, int | None, float | None], Tensor] | None = None,
        generate: Callable[[Tensor, int, Tensor | None], Tensor] | None = None,
        tokenizer: Tokenizer | None = None,
        config: Callable[[], ModelConfig] | None = None,
        reference_model: Callable[[], Transformer] | None = None,
        build: Callable[[ModelConfig, int], Target] | None = None,
        buildable: Callable[[ModelConfig], ModelConfig] | None = None,
        vocab_size: int | None = None,
        max_positions: int | None = None,
        name: str = "module",
        version: str = "",
        tolerance: str | None = None,
        trained: bool = False,
    ) -> None:
        """Check every path now, so that a typo is an error naming it rather than a claim reported not exposed.

        ``cached_forward()`` starts an empty KV cache and returns a stepper: ``step(ids [B, t], mask [B, t] bool)``
        feeds the next t tokens and returns their logits [B, t, V] (the mask covers those t tokens only; a model
        that wants the whole mask so far keeps it in the stepper). ``decode`` feeds the prefill in one step, then
        one token per step. ``vocab_size`` defaults to the embedding's rows, else the unembedding's, else the
        width of the logits for one token; ``max_positions`` to 2^30 (give the context length of a model with
        learned positions).
        """
        self.model = model.eval()
        self.name, self.version, self.trained = name, version, trained  # type: ignore[misc]
        self._logits = logits
        self._paths = {"embedding": embedding, "unembedding": unembedding, "unembedding_bias": unembedding_bias,
                       "blocks": blocks, "final_norm": final_norm}
        for what, path in self._paths.items():
            if path is not None:
                resolve_path(model, path, what)
        self._layout, self._attention_path = sublayers, attention_weights
        if (sublayers is not None or attention_weights is not None) and blocks is None:
            raise InputError("sublayers= and attention_weights= name parts of a block: give blocks= too")
        for i, block in enumerate(self._blocks() if blocks is not None else []):
            parts = [] if sublayers is None else [sublayers.norm1, sublayers.attention, sublayers.mlp,
                                                  *([sublayers.norm2] if sublayers.norm2 else [])]
            for part in [*parts, *([attention_weights] if attention_weights else [])]:
                resolve_path(block, part, f"{blocks}.{i} part")
        self._given: dict[str, Any] = {
            "decode": cached_forward, "queries_keys": queries_keys, "attention_values": attention_values,
            "softmax": softmax,
            "filtered_probabilities": filtered_probabilities, "sample": sample, "generate": generate,
            "tokenizer": tokenizer, "config": config, "reference_model": reference_model, "build": build}
        self._buildable = buildable
        first = next(model.parameters(), None)
        if first is not None:
            self.device, self.dtype = first.device, first.dtype
        self.tolerance = tolerance or for_dtype(self.dtype).name
        self.vocab_size = vocab_size or self._vocab_size()
        if max_positions is not None:
            self.max_positions = max_positions

    # -- paths ----------------------------------------------------------------------------------------------------
    def _at(self, what: str) -> Any:
        path = self._paths[what]
        if path is None:
            capability = {"embedding": "embedding_matrix", "unembedding_bias": "unembedding",
                          "blocks": "residual_states"}.get(what, what)
            raise NotExposed(capability, f"no {what}= path given to ModuleTarget")
        return resolve_path(self.model, path, what)

    def _blocks(self) -> list[nn.Module]:
        found = self._at("blocks")
        if not isinstance(found, Sequence | nn.ModuleList | nn.Sequential) or not all(
                isinstance(b, nn.Module) for b in found):
            raise InputError(f"blocks={self._paths['blocks']!r} is a {type(found).__name__}, not a list of modules")
        return list(found)

    def _vocab_size(self) -> int:
        if self._paths["embedding"] is not None:
            return int(self.embedding_matrix().shape[0])
        if self._paths["unembedding"] is not None:
            return int(self.unembedding()[0].shape[1])
        return int(self.logits(torch.zeros(1, 1, dtype=torch.long, device=self.device)).shape[-1])

    @staticmethod
    def _matrix(found: Any, what: str) -> Tensor:
        """The tensor a path names: itself, or a module's ``weight``; detached (a view of the same storage)."""
        weight = found if isinstance(found, Tensor) else getattr(found, "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            raise InputError(f"{what}= names a {type(found).__name__}, not a [V, d] tensor or a module with one")
        return weight.detach()

    # -- the capabilities ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self._logits(ids, attention_mask)

    def embedding_matrix(self) -> Tensor:
        return self._matrix(self._at("embedding"), "embedding")

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        """U [d, V] as the transpose of the stored [V, d] weight, and the bias: views, never copies."""
        found = self._at("unembedding")
        bias = getattr(found, "bias", None) if isinstance(found, nn.Linear) else None
        if self._paths["unembedding_bias"] is not None:
            bias = self._at("unembedding_bias")
        return self._matrix(found, "unembedding").T, None if bias is None else bias.detach()

    @torch.no_grad()
    def final_norm(self, h: Tensor) -> Tensor:
        return _first(self._at("final_norm")(h))

    @torch.no_grad()
    def _caught(self, ids: Tensor, mask: Tensor | None, inputs: Sequence[nn.Module] = (),
                outputs: Sequence[nn.Module] = ()) -> list[Tensor]:
        """In one forward pass, in call order: the hidden states ``inputs`` received and what ``outputs`` returned."""
        seen: list[Tensor] = []
        handles = [m.register_forward_pre_hook(lambda _m, a, kw: seen.append(_hidden(a, kw)), with_kwargs=True)
                   for m in inputs]
        handles += [m.register_forward_hook(lambda _m, _a, out: seen.append(_first(out))) for m in outputs]
        try:
            self._logits(ids, mask)
        finally:
            for h in handles:
                h.remove()
        return seen

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """Each block's input, then the final norm's input (the last block's output without ``final_norm=``)."""
        blocks = self._blocks()
        if self._paths["final_norm"] is not None:
            states = self._caught(ids, attention_mask, inputs=[*blocks, self._at("final_norm")])
        else:
            states = self._caught(ids, attention_mask, inputs=blocks, outputs=blocks[-1:])
        if len(states) != len(blocks) + 1:
            raise NotExposed("residual_states", f"{len(states)} hidden states caught for {len(blocks)} blocks "
                                                f"(a block or the final norm ran more or less than once)")
        return tuple(states)

    def embed(self, ids: Tensor) -> Tensor:
        return self.residual_states(ids)[0]

    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        if self._attention_path is None:
            raise NotExposed("attention_weights", "no attention_weights= path given")
        modules = [resolve_path(b, self._attention_path, "attention_weights") for b in self._blocks()]
        return tuple(self._caught(ids, attention_mask, outputs=modules))

    def sublayers(self, layer: int) -> Sublayers:
        if self._layout is None:
            raise NotExposed("sublayers", "no sublayers= layout given")
        return HookedSublayers(self._dummy_pass, self._blocks()[layer], self._layout)

    def _dummy_pass(self, x: Tensor) -> object:
        """The model's forward on token 0 everywhere, for x's batch and length (HookedSublayers substitutes x)."""
        return self._logits(torch.zeros(x.shape[:2], dtype=torch.long, device=x.device), None)

    @torch.no_grad()
    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        step: Stepper = self._needs("decode")()
        mask = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        out = [step(ids[:, :prefill], mask[:, :prefill])]
        out += [step(ids[:, t:t + 1], mask[:, t:t + 1]) for t in range(prefill, ids.shape[1])]
        return torch.cat(out, dim=1)

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        def forward() -> Tensor:
            out = self._logits(ids, None)
            if not out.requires_grad:
                raise NotExposed("train_step", "the logits callable returned no gradient (is it under no_grad?)")
            return out

        try:
            sgd_step(self.model, forward, targets, lr)
        finally:
            self.model.eval()

    def _needs(self, capability: str) -> Any:
        given = self._given[capability]
        if given is None:
            raise NotExposed(capability, f"no {capability}= given to ModuleTarget")
        return given

    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self._needs("queries_keys")(layer, ids)  # type: ignore[no-any-return]

    def attention_values(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self._needs("attention_values")(layer, ids)  # type: ignore[no-any-return]

    def softmax(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        return self._needs("softmax")(logits, temperature)  # type: ignore[no-any-return]

    def filtered_probabilities(self, logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                               top_p: float | None = None) -> Tensor:
        return self._needs("filtered_probabilities")(logits, temperature, top_k, top_p)  # type: ignore[no-any-return]

    def sample(self, logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None) -> Tensor:
        return self._needs("sample")(logits, generator, temperature, top_k, top_p)  # type: ignore[no-any-return]

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        return self._needs("generate")(ids, max_new_tokens, attention_mask)  # type: ignore[no-any-return]

    def tokenizer(self) -> Tokenizer:
        return self._needs("tokenizer")  # type: ignore[no-any-return]

    def config(self) -> ModelConfig:
        return self._needs("config")()  # type: ignore[no-any-return]

    def reference_model(self) -> Transformer:
        return self._needs("reference_model")()  # type: ignore[no-any-return]

    def build(self, config: ModelConfig, seed: int = 0) -> Target:
        return self._needs("build")(config, seed)  # type: ignore[no-any-return]

    def buildable(self, config: ModelConfig) -> ModelConfig:
        return config if self._buildable is None else self._buildable(config)

    @property
    def capabilities(self) -> frozenset[str]:
        """Exactly what was given or can be derived from what was given."""
        paths = {name for name, path in self._paths.items() if path is not None}
        have = {name for name, given in self._given.items() if given is not None} | {"train_step"}
        have |= {"unembedding", "final_norm"} & paths
        if "embedding" in paths:
            have.add("embedding_matrix")
        if "blocks" in paths:
            have |= {"residual_states", "embed"}
            if self._layout is not None:
                have.add("sublayers")
            if self._attention_path is not None:
                have.add("attention_weights")
        if self.trained:
            have.add("trained")
        return frozenset(have)
