"""``compiled:<target>``: any target's model under ``torch.compile`` (Inductor by default), checked by the catalog.

The spec is ``compiled:TARGET`` or ``compiled:OPTIONS:TARGET``: TARGET is any other target spec
(``reference:llama-tiny``, ``hf:llama``, ``mypkg.adapter:build``), OPTIONS a comma-separated list of
``key=value`` passed through to ``torch.compile``::

    compiled:hf:llama
    compiled:mode=max-autotune-no-cudagraphs:reference:llama-tiny
    compiled:dynamic=false,fullgraph=true:hf:llama
    compiled:epilogue_fusion=false:hf:llama           # any Inductor config option (torch._inductor.list_options())
    compiled:backend=aot_eager:hf:llama               # Dynamo + AOTAutograd without Inductor: to bisect a failure

``backend`` is ``inductor`` (default), ``aot_eager`` or ``eager``; ``mode`` one of
``torch._inductor.list_mode_options()`` (Inductor only); ``dynamic`` ``true`` (default: one graph for every batch
size and length >= 2, where ``auto`` would compile each new shape once more before marking it dynamic), ``false``
or ``auto``; ``fullgraph`` ``false`` (default) or ``true``. Options are checked before anything is built: a bad
one is one InputError naming it and what is allowed. An inner target's first segment never contains ``=``, so
the two forms cannot be confused.

How the model goes through the compiler. The inner target must keep the module it computes with in ``.model``
(ReferenceTarget, HFTarget and most adapters do). That module is compiled **in place** (``nn.Module.compile``: the
same module, the same parameters, no copy), so every call of it anywhere in the inner target's code -- logits,
residual states, attention weights, cached decoding, ``generate``'s loop, ``train_step``'s forward and backward --
runs the compiled graphs, with Dynamo's graph breaks where the model has them (the reference's input checks,
``int(ids.min())`` and the like: Dynamo runs those bytecodes eagerly between graphs, as ``torch.compile`` does).
``queries_keys`` (the whole model, then a projection) is the inner target's method under ``torch.compile`` with
the same settings. The methods that compute with a part of the model (``final_norm``, ``embed``, ``sublayers``'s
functions) are compiled with ``fullgraph=True``: a graph break there would run that part's own math eagerly, so
what Dynamo cannot capture as one graph is *not exposed*, with Dynamo's reason. (The reference's
``sublayers.attention`` was such a part until ReferenceSublayers passed ``is_causal`` as a plain bool:
``scaled_dot_product_attention`` refuses the SymBool ``t > 1`` becomes under dynamic shapes.)

What it does not claim. Every compiled capability counts the compiled graphs that ran during the call (a backend
that wraps the chosen one and counts, ``_CountingBackend``) and fails the call if none ran: a check never passes
on eager code presented as compiled. Graph breaks are counted per capability (``compile_report()``). Not exposed:
``tokenizer``, ``softmax``, ``filtered_probabilities`` and ``sample`` (no model computation: the inner target's own
run checks them); ``build`` (every built model is a new architecture and a new compilation, 30-100 s each on a
2-core machine, and the catalog's build claims draw dozens); on a HuggingFace target, what HFTarget reads through
per-call hooks or a recording attention function (``_HF_INSTRUMENTED``). The weights (``embedding_matrix``,
``unembedding``), ``config`` and ``reference_model`` are the inner target's, read without computing.
"""

from __future__ import annotations

import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reference.config import ModelConfig
from reference.model import Transformer
from spec.errors import InputError
from spec.target import Departures, NotExposed, Sublayers, Target

BACKENDS = ("inductor", "aot_eager", "eager")
DYNAMIC = {"true": True, "false": False, "auto": None}
BOOLS = {"true": True, "false": False}

# What runs through compiled code (the module compiled in place, or the inner method wrapped in torch.compile),
# what is only read (weights, config), and what is left out (see the module docstring).
THROUGH_MODEL = ("logits", "residual_states", "attention_weights", "decode", "generate", "train_step")
THROUGH_METHOD = ("embed", "final_norm", "queries_keys", "sublayers")
READ_ONLY = ("embedding_matrix", "unembedding", "config", "reference_model")
LEFT_OUT = {"tokenizer": "no model computation (checked on the inner target itself)",
            "softmax": "no model computation (checked on the inner target itself)",
            "filtered_probabilities": "no model computation (checked on the inner target itself)",
            "sample": "no model computation (checked on the inner target itself)",
            "build": "each built model is a new architecture and a new compilation; not offered"}

# What a HuggingFace target (spec.targets.hf_target.HFTarget) computes through instrumentation that does not survive
# torch.compile, measured on hf:llama (torch 2.13, transformers 5.24): exposing these would check eager code, or
# nothing. Not exposed on a compiled HFTarget, with these reasons.
_HF_INSTRUMENTED = {
    "residual_states": "HFTarget reads the state entering the final norm with a forward pre-hook added for each call; "
                       "Dynamo does not guard on hooks added after compilation (skip_nnmodule_hook_guards), so the "
                       "compiled graph never calls it (measured: nothing captured)",
    "attention_weights": "recorded through transformers' AttentionInterface by a recording function Dynamo cannot "
                         "trace (11 graph breaks on hf:llama): the attention itself would run eagerly",
    "queries_keys": "recorded through transformers' AttentionInterface by a recording function Dynamo cannot trace "
                    "(11 graph breaks on hf:llama): the attention itself would run eagerly",
    "embed": "hidden_states[0] comes through transformers' output-capturing context managers, which break the graph "
             "(5 breaks on hf:llama)",
    "sublayers": "attention and block run the model with hooks added for each call, which the compiled graph does not "
                 "call (as residual_states)",
}

# Dynamo keeps one cache entry per guard set on each code object and, past recompile_limit (default 8) entries,
# silently runs that frame eagerly. Every in-place compiled module shares one code object
# (nn.Module._call_impl), and the catalog asks for many variants (batch 1 or more, one or more tokens, with a mask,
# with states or attentions returned, each decode step kind): the limit is raised and hitting it is an error,
# never a silent fall back to eager code.
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Settings:
    """torch.compile's arguments, as parsed from the spec."""

    backend: str = "inductor"
    mode: str | None = None
    dynamic: bool | None = True
    fullgraph: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        parts = [f"backend={self.backend}", f"dynamic={self.dynamic}", f"fullgraph={self.fullgraph}"]
        if self.mode:
            parts.append(f"mode={self.mode}")
        parts += [f"{k}={v}" for k, v in self.options]
        return "torch.compile(" + ", ".join(parts) + ")"


def parse(rest: str) -> tuple[Settings, str]:
    """``OPTIONS:TARGET`` or ``TARGET`` -> (settings, inner spec); InputError for a bad option."""
    head, sep, tail = rest.partition(":")
    if not rest or (sep == "" and "=" in head):
        raise InputError(f"target compiled:{rest}: name the target to compile, e.g. compiled:reference:llama-tiny "
                         "or compiled:mode=max-autotune-no-cudagraphs:hf:llama")
    if "=" not in head:
        return Settings(), rest
    given: dict[str, str] = {}
    for item in head.split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise InputError(f"target compiled:{rest}: option {item!r} is not key=value")
        if key in given:
            raise InputError(f"target compiled:{rest}: option {key!r} given twice")
        given[key] = value
    return _settings(rest, given), tail


def _settings(rest: str, given: dict[str, str]) -> Settings:
    where = f"target compiled:{rest}"
    backend = given.pop("backend", "inductor")
    if backend not in BACKENDS:
        raise InputError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    mode = given.pop("mode", None)
    dynamic_s = given.pop("dynamic", "true")
    fullgraph_s = given.pop("fullgraph", "false")
    if dynamic_s not in DYNAMIC:
        raise InputError(f"{where}: dynamic must be true, false or auto, got {dynamic_s!r}")
    if fullgraph_s not in BOOLS:
        raise InputError(f"{where}: fullgraph must be true or false, got {fullgraph_s!r}")
    options = {key: _inductor_option(where, key, value) for key, value in given.items()}
    if backend != "inductor" and (mode is not None or options):
        named = ", ".join(["mode"] * (mode is not None) + sorted(options))
        raise InputError(f"{where}: {named}: only for backend=inductor, not backend={backend}")
    if mode is not None:
        from torch._inductor import list_mode_options

        modes = list(dict.fromkeys(["default", *list_mode_options()]))
        if mode not in modes:
            raise InputError(f"{where}: mode must be one of {', '.join(modes)}, got {mode!r}")
    if mode is not None and options:
        raise InputError(f"{where}: give mode or Inductor options ({', '.join(sorted(options))}), not both "
                         "(torch.compile takes one or the other)")
    settings = Settings(backend, mode, DYNAMIC[dynamic_s], BOOLS[fullgraph_s], tuple(sorted(options.items())))
    _inductor_wrapper(where, settings)  # torch's own checks of the mode and options, before anything is built
    return settings


def _inductor_option(where: str, key: str, value: str) -> Any:
    """An Inductor config option given as text, in its declared type (bool, int, float or str)."""
    from torch._inductor import config

    known = config.get_config_copy()
    name = key.replace("-", "_")
    if name not in known:
        raise InputError(f"{where}: unknown option {key!r}; use backend, mode, dynamic, fullgraph or an Inductor "
                         "config option (torch._inductor.list_options(), e.g. epilogue_fusion=false)")
    kind = config.get_type(name)  # type: ignore[attr-defined]
    if typing.get_origin(kind) is typing.Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise InputError(f"{where}: Inductor option {key} must be one of {', '.join(map(str, allowed))}, "
                             f"got {value!r}")
        return value
    try:
        if kind is bool:
            if value not in BOOLS:
                raise ValueError(value)
            return BOOLS[value]
        if kind in (int, float, str):
            return kind(value)
    except ValueError:
        raise InputError(f"{where}: Inductor option {key} takes a {kind.__name__}, got {value!r}") from None
    raise InputError(f"{where}: Inductor option {key} is of type {kind}; only bool, int, float, str and Literal "
                     "options can be given in a target spec")


def _inductor_wrapper(where: str, settings: Settings) -> Any:
    """The object torch.compile itself builds for backend="inductor" with this mode and these options."""
    if settings.backend != "inductor":
        return None
    try:
        return torch._TorchCompileInductorWrapper(settings.mode, dict(settings.options) or None, settings.dynamic)
    except RuntimeError as err:  # torch's own refusal of an option (an unexpected type, say)
        raise InputError(f"{where}: {err}") from err


class _CountingBackend:
    """The chosen backend, counting the graphs it compiled and how often they ran.

    A compiled graph is a callable Dynamo runs instead of the bytecode it captured; wrapping it is the only
    way to know, call by call, that compiled code and not the eager module computed a result.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._compile: Any = (_inductor_wrapper("compiled", settings) if settings.backend == "inductor"
                              else torch._dynamo.lookup_backend(settings.backend))
        self.graphs = 0
        self.runs = 0
        self.__name__ = f"counting_{settings.backend}"

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.graphs += 1
        compiled = self._compile(gm, example_inputs)

        def run(*args: Any) -> Any:
            self.runs += 1
            return compiled(*args)

        return run


@dataclass
class Accounting:
    """Per capability: calls, compiled-graph runs, graphs compiled, graph breaks and seconds spent compiling."""

    calls: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    graphs: Counter[str] = field(default_factory=Counter)
    compile_seconds: dict[str, float] = field(default_factory=dict)
    breaks: dict[str, Counter[str]] = field(default_factory=dict)


def _graph_breaks() -> Counter[str]:
    from torch._dynamo.utils import counters

    return Counter({reason.splitlines()[0]: n for reason, n in counters["graph_break"].items()})


class CompiledSublayers:
    """The inner target's sublayer functions, each under torch.compile as one whole graph."""

    def __init__(self, owner: CompiledTarget, inner: Sublayers) -> None:
        self._owner, self._inner = owner, inner

    @property
    def parallel(self) -> bool:
        return self._inner.parallel

    def norm1(self, x: Tensor) -> Tensor:
        return self._owner._whole("sublayers.norm1", self._inner.norm1, x)  # type: ignore[no-any-return]

    def norm2(self, x: Tensor) -> Tensor:
        return self._owner._whole("sublayers.norm2", self._inner.norm2, x)  # type: ignore[no-any-return]

    def attention(self, x: Tensor) -> Tensor:
        return self._owner._whole("sublayers.attention", self._inner.attention, x)  # type: ignore[no-any-return]

    def mlp(self, x: Tensor) -> Tensor:
        return self._owner._whole("sublayers.mlp", self._inner.mlp, x)  # type: ignore[no-any-return]

    def block(self, x: Tensor) -> Tensor:
        return self._owner._whole("sublayers.block", self._inner.block, x)  # type: ignore[no-any-return]


class CompiledTarget(Target):
    """Another target whose module runs under torch.compile (see the module docstring)."""

    def __init__(self, inner: Target, settings: Settings | None = None, name: str | None = None) -> None:
        from spec.targets.hf_target import HFTarget

        model = getattr(inner, "model", None)
        if not isinstance(model, nn.Module):
            raise InputError(f"target compiled:{inner.name}: the target keeps no torch module in .model; "
                             "compiled:<target> compiles the module a target computes with")
        self.inner = inner
        self.settings = settings or Settings()
        self.backend = _CountingBackend(self.settings)
        self.accounting = Accounting()
        self.name = name or f"compiled:{inner.name}"
        self.version = f"{inner.version}; {self.settings.describe()}, torch {torch.__version__}".lstrip("; ")
        self.vocab_size = inner.vocab_size
        self.max_positions = inner.max_positions
        self.device, self.dtype = inner.device, inner.dtype
        self.tolerance = inner.tolerance
        self.trained = inner.trained  # type: ignore[misc]
        self.max_examples = inner.max_examples
        self.realistic_examples = 0  # needs a tokenizer, which is not exposed here
        have = inner.capabilities
        self.withheld = {cap: why for cap, why in LEFT_OUT.items() if cap in have}  # not exposed here, with why
        if isinstance(inner, HFTarget):
            self.withheld |= {cap: why for cap, why in _HF_INSTRUMENTED.items() if cap in have}
        offered = set(THROUGH_MODEL + THROUGH_METHOD + READ_ONLY) - set(self.withheld)
        self._exposed = frozenset(c for c in have if c in offered or c == "trained")
        model.compile(backend=self.backend, dynamic=self.settings.dynamic, fullgraph=self.settings.fullgraph)
        self._not_whole: dict[str, str] = {}  # capability -> why Dynamo could not capture it as one graph

    # -- the machinery ------------------------------------------------------------------------------------------------
    def _whole(self, capability: str, method: Callable[..., Any], *args: Any) -> Any:
        """One of the inner target's methods that computes with a part of the model, under torch.compile with
        fullgraph=True: Dynamo captures it whole or it is not exposed, naming why (a graph break there would run
        that part's math eagerly, unlike the model's own graph breaks, which are at its Python input checks).

        dynamic=True is applied as it is to the model's ids: the arguments' batch and length dimensions are marked
        dynamic, their width and the weights stay static. torch.compile(dynamic=True) on a method would make the
        weights' shapes symbolic too (they are reached through the target, not a module): measured on the
        reference, the head counts became symbolic and scaled_dot_product_attention refused enable_gqa=SymBool."""
        if capability in self._not_whole:
            raise NotExposed(capability.partition(".")[0], self._not_whole[capability])
        dynamic = self.settings.dynamic
        if dynamic:  # as for the model's ids: batch and length dynamic, widths and weights static
            for arg in args:
                if isinstance(arg, Tensor):
                    for dim in range(arg.dim() - (1 if arg.is_floating_point() else 0)):
                        torch._dynamo.maybe_mark_dynamic(arg, dim)
            dynamic = None
        fn = torch.compile(method, backend=self.backend, dynamic=dynamic, fullgraph=True)
        try:
            with self._through(capability):
                return fn(*args)
        except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.UserError,
                torch._dynamo.exc.UncapturedHigherOrderOpError) as err:  # what fullgraph=True raises at a break
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
            why = next((line.removeprefix("Developer debug context:").strip() for line in lines
                        if line.startswith("Developer debug context:")), lines[0])
            self._not_whole[capability] = f"torch.compile cannot capture {capability} as one graph: {why}"
            raise NotExposed(capability.partition(".")[0], self._not_whole[capability]) from err

    @contextmanager
    def _through(self, capability: str) -> Iterator[None]:
        """Run one capability call under the compile settings; fail it if no compiled graph ran."""
        acc, runs, graphs, breaks = self.accounting, self.backend.runs, self.backend.graphs, _graph_breaks()
        start = time.perf_counter()
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True,
                                        skip_nnmodule_hook_guards=False):
            yield
        acc.calls[capability] += 1
        acc.runs[capability] += self.backend.runs - runs
        if self.backend.graphs > graphs:
            acc.graphs[capability] += self.backend.graphs - graphs
            acc.compile_seconds[capability] = acc.compile_seconds.get(capability, 0.0) + time.perf_counter() - start
            new = _graph_breaks() - breaks
            if new:
                acc.breaks.setdefault(capability, Counter()).update(new)
        if self.backend.runs == runs:
            raise AssertionError(f"{self.name}: {capability} ran no compiled graph: the call did not go through "
                                 "torch.compile (an eager path in the target), so it checks nothing compiled")

    def compile_report(self) -> str:
        """One line per capability called: calls, compiled-graph runs, graphs compiled, compile seconds, breaks."""
        acc = self.accounting
        lines = []
        for cap in sorted(acc.calls):
            breaks = "; ".join(f"{n}x {r}" for r, n in acc.breaks.get(cap, Counter()).most_common())
            line = (f"{cap}: {acc.calls[cap]} calls, {acc.runs[cap]} graph runs, {acc.graphs[cap]} graphs "
                    f"compiled in {acc.compile_seconds.get(cap, 0.0):.0f} s")
            lines.append(line + (f"; graph breaks: {breaks}" if breaks else ""))
        return "\n".join(lines)

    @property
    def capabilities(self) -> frozenset[str]:
        return self._exposed

    def _need(self, capability: str) -> None:
        if capability in self.withheld:
            raise NotExposed(capability, f"not under torch.compile: {self.withheld[capability]}")
        if capability not in self.inner.capabilities:
            raise NotExposed(capability, f"{self.inner.name} does not expose it")

    # -- through the module compiled in place ------------------------------------------------------------------------
    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        with self._through("logits"):
            return self.inner.logits(ids, attention_mask)

    def residual_states(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        self._need("residual_states")
        with self._through("residual_states"):
            return self.inner.residual_states(ids, attention_mask)

    def attention_weights(self, ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, ...]:
        self._need("attention_weights")
        with self._through("attention_weights"):
            return self.inner.attention_weights(ids, attention_mask)

    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        self._need("decode")
        with self._through("decode"):
            return self.inner.decode(ids, prefill, attention_mask)

    def generate(self, ids: Tensor, max_new_tokens: int, attention_mask: Tensor | None = None) -> Tensor:
        self._need("generate")
        with self._through("generate"):
            return self.inner.generate(ids, max_new_tokens, attention_mask)

    def train_step(self, ids: Tensor, targets: Tensor, lr: float) -> None:
        self._need("train_step")
        with self._through("train_step"):
            self.inner.train_step(ids, targets, lr)

    # -- the inner target's methods under torch.compile --------------------------------------------------------------
    def embed(self, ids: Tensor) -> Tensor:
        self._need("embed")
        return self._whole("embed", self.inner.embed, ids)  # type: ignore[no-any-return]

    def final_norm(self, h: Tensor) -> Tensor:
        self._need("final_norm")
        return self._whole("final_norm", self.inner.final_norm, h)  # type: ignore[no-any-return]

    def queries_keys(self, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The inner method under torch.compile with the model's own settings: it runs the whole model for the
        residual state (with the model's graph breaks at its input checks), then projects it."""
        self._need("queries_keys")
        fn = torch.compile(self.inner.queries_keys, backend=self.backend, dynamic=self.settings.dynamic,
                           fullgraph=self.settings.fullgraph)
        with self._through("queries_keys"):
            return fn(layer, ids)  # type: ignore[no-any-return]

    def sublayers(self, layer: int) -> Sublayers:
        self._need("sublayers")
        return CompiledSublayers(self, self.inner.sublayers(layer))

    # -- read, not computed -----------------------------------------------------------------------------------------
    def embedding_matrix(self) -> Tensor:
        self._need("embedding_matrix")
        return self.inner.embedding_matrix()

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        self._need("unembedding")
        return self.inner.unembedding()

    def config(self) -> ModelConfig:
        self._need("config")
        return self.inner.config()

    def reference_model(self) -> Transformer:
        self._need("reference_model")
        return self.inner.reference_model()

    def departures(self) -> Departures:
        """The inner model's declarations: compiling changes no constant of its formulas."""
        return self.inner.departures()


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``compiled`` kind: ``compiled:[key=value,...:]<target>``, the inner target compiled."""
    from spec.targets.registry import resolve

    settings, inner_spec = parse(rest)
    if inner_spec.partition(":")[0] == "compiled":
        raise InputError(f"target compiled:{rest}: compiling a compiled target is not supported; give the inner "
                         "target once")
    dtype_name = str(dtype).removeprefix("torch.")
    inner = resolve(inner_spec, device=device, dtype=dtype_name)
    prefix = rest[: len(rest) - len(inner_spec)]
    return CompiledTarget(inner, settings, name=f"compiled:{prefix}{inner.name}")
