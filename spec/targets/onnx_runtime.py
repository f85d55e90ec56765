"""ONNX Runtime as a peer: a model exported by ``torch.onnx.export`` and run by ``onnxruntime`` on the CPU.

Targets ``onnx:reference:<preset>`` (the reference presets, seeded weights of ``reference:<preset>``) and
``onnx:hf:<preset>`` (the tiny HuggingFace presets of ``hf:<preset>``, same seeded weights). The torch model is
exported once per process with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, its default,
opset and optimizer left at their defaults) with dynamic batch, sequence and cache lengths, into a private
temporary folder that is deleted as soon as ONNX Runtime has loaded the file; nothing is written elsewhere.
From then on every number the target returns is computed by ONNX Runtime (``CPUExecutionProvider``, one
thread) or read from the exported file: no torch code runs for ``logits`` or ``decode``.

The exported graph is one decoding step with a KV cache, in the layout ONNX exports of decoders usually have:

    inputs   input_ids [B, t] int64, attention_mask [B, P + t] int64 (1 real, 0 padding; left padding),
             past_key_values.{i}.key / .value [B, H_kv, P, d_head] float32 for each layer i
    outputs  logits [B, t, V], present.{i}.key / .value [B, H_kv, P + t, d_head]

P = 0 (empty past tensors) is a whole forward pass: ``logits`` is that. ``decode`` feeds ids[:, :prefill] with
an empty past, then one token per call, handing each call's ``present`` back as the next call's past. Positions
are counted inside the graph from the mask (each row's first real token is position 0), so left-padded batches
and cached steps get the positions the reference and HF's generate give them.

What is exported:

- ``onnx:hf:<preset>``: the HF model's own forward (eager attention, as the ``hf:`` presets), called with
  ``position_ids`` computed from the mask and a ``DynamicCache`` built from the past tensors.
- ``onnx:reference:<preset>``: ``reference.Transformer.forward`` cannot be exported as it is: its input checks and
  its shortcuts for unpadded inputs read tensor values (``int(ids.min())``, ``bool(mask.all())``), which
  ``torch.export`` refuses (GuardOnDataDependentSymNode). The graph is therefore traced through a short wrapper
  (:class:`_ReferenceStep`) that calls the reference's own modules and functions on the general path the forward
  takes for a padded batch with a cache (positions from the mask, ``visibility_mask``, rotary angles or ALiBi
  bias, every block with the default fast attention path, final norm, unembedding); the past keys and values
  are concatenated with the new ones where ``reference.cache.KVCache.store`` would write them.

What the target exposes, and why nothing more:

- ``logits`` (with a left-padded mask) and ``decode``: computed by ONNX Runtime, as above.
- ``embedding_matrix`` and ``unembedding``: read from the exported file, not from torch: E is the data of the
  Gather/GatherND node that looks up ``input_ids``, U (and b) the constant operands of the MatMul/Gemm (and Add)
  that produce ``logits``, found by walking the graph. So OUT-3 checks the exported artifact's tying, and EMB-2,
  OUT-4..6 its tables.
- ``config`` and ``reference_model``: the architecture and the reference converted from the torch weights the
  export was made from (``reference.build`` of the preset; ``reference.convert.from_hf`` of the HF model). That is
  the oracle, not the target: REF-1 compares ONNX Runtime's logits and cached decoding with it.
- No ``embed``, ``residual_states``, ``attention_weights``, ``queries_keys``, ``sublayers`` or ``final_norm``: the
  graph's outputs are the logits and the cache (the intermediate values exist inside ONNX Runtime but are not
  outputs); no ``generate``, ``softmax``, ``sample``: an exported decoder has no sampling loop of its own (one
  written here would check this file, not ONNX Runtime); no ``tokenizer``: the presets have none; no ``build``
  or ``train_step``: an exported graph is frozen.

Tolerance class ``float32``: ONNX Runtime's CPU kernels (MLAS matmuls, its own softmax, reductions) differ from
torch's by float32 rounding. Measured on every preset (8 reference, 13 HF; 3 rows of 9 tokens, two left-padded),
logits, padded logits and decoding from prefills 1, 4 and 9 differ from the torch model's by at most 4.8e-6
(the class allows 1e-4 + 1e-4 |x|); E and U read from the file equal the torch weights bit for bit.
Only float32 on the CPU is offered.
"""

from __future__ import annotations

import functools
import inspect
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reference.config import ModelConfig
from reference.model import Transformer
from spec.target import NotExposed, Target

# the nodes an ID tensor passes through on its way to the embedding lookup, and those between U and the logits
_ID_PASSTHROUGH = ("Unsqueeze", "Squeeze", "Cast", "Reshape", "Identity", "Flatten")
_VIEW_OPS = ("Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten")


def reference_presets() -> list[str]:
    from reference.presets import PRESETS

    return sorted(PRESETS)


def hf_presets() -> list[str]:
    from spec.targets.hf_presets import HF_PRESETS

    return sorted(HF_PRESETS)


def allowed() -> list[str]:
    """Every target name this module builds."""
    return [f"onnx:reference:{p}" for p in reference_presets()] + [f"onnx:hf:{p}" for p in hf_presets()]


# ------------------------------------------------------------------------------ the graphs exported


class _ConcatCache:
    """What ``reference.attention.Attention`` asks of a KV cache (``store``), as concatenation: the past keys and
    values of each layer, then this step's; the results are the graph's ``present`` outputs."""

    def __init__(self, past: list[tuple[Tensor, Tensor]]) -> None:
        self.past = past
        self.present: list[tuple[Tensor, Tensor]] = []

    def store(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        pk, pv = self.past[layer]
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.present.append((k, v))
        return k, v


class _ReferenceStep(nn.Module):
    """One decoding step of a reference Transformer, on the path its forward takes for a padded batch with a cache.

    input_ids [B, t], attention_mask [B, P + t], past [(key, value) [B, H_kv, P, d_head]] per layer
    -> logits [B, t, V] and each layer's present key and value [B, H_kv, P + t, d_head].
    """

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, past: list[Tensor]) -> tuple[Tensor, ...]:
        from reference.attention import visibility_mask
        from reference.positions import positions_from_mask
        from reference.unembedding import unembed

        m, cfg = self.model, self.model.cfg
        t = input_ids.shape[1]
        n_past = attention_mask.shape[1] - t
        real = attention_mask.bool()
        pos_all = positions_from_mask(real, torch.zeros_like(attention_mask[:, 0]))  # [B, P + t]
        pos = pos_all[:, n_past:]
        h = m._embed(input_ids, pos)
        mask = visibility_mask(real, t, n_past)
        bias = cfg.scheme.bias(pos, pos_all, cfg, torch.float32)  # ALiBi's, or None
        rotary = cfg.scheme.angles(pos, cfg, h.dtype)  # rotary cos and sin, or None
        cache = _ConcatCache([(past[2 * i], past[2 * i + 1]) for i in range(cfg.n_layers)])
        for i, block in enumerate(m.blocks):
            h, _ = block(h, mask, rotary=rotary, bias=bias, cache=cache, layer=i)  # type: ignore[arg-type]
        logits = unembed(m.final_norm(h), m.W_U, m.b_U)
        return (logits, *[x for kv in cache.present for x in kv])


class _HFStep(nn.Module):
    """One decoding step of a HuggingFace causal LM: its own forward with position_ids from the mask (as its
    generate computes them for left padding) and a DynamicCache holding the past keys and values."""

    def __init__(self, model: nn.Module, n_layers: int) -> None:
        super().__init__()
        from spec.targets.hf_target import cache_keyword

        self.model, self.n_layers = model, n_layers
        params = inspect.signature(model.forward).parameters
        self.cache_arg = cache_keyword(params)
        self.takes_positions = "position_ids" in params

    def forward(self, input_ids: Tensor, attention_mask: Tensor, past: list[Tensor]) -> tuple[Tensor, ...]:
        from transformers import DynamicCache

        t = input_ids.shape[1]
        kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True,
                              self.cache_arg: DynamicCache([(past[2 * i], past[2 * i + 1])
                                                            for i in range(self.n_layers)])}
        if self.takes_positions:
            kw["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, attention_mask.shape[1] - t:]
        out = self.model(**kw)
        return (out.logits, *_cache_tensors(getattr(out, self.cache_arg)))


def _cache_tensors(cache: Any) -> list[Tensor]:
    """A transformers cache's keys and values, layer by layer: [k0, v0, k1, v1, ...]."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [x for layer in cache.layers for x in (layer.keys, layer.values)]
    return [x for k, v in zip(cache.key_cache, cache.value_cache, strict=True) for x in (k, v)]


# ------------------------------------------------------------------------------ reading the exported file


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """The graph's initializers and Constant nodes' values, by name."""
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _constant_matrix(name: str, consts: dict[str, np.ndarray], producers: dict[str, Any]) -> np.ndarray | None:
    """A constant operand, or the transpose of one (a Transpose node on a constant)."""
    if name in consts:
        return consts[name]
    node = producers.get(name)
    if node is not None and node.op_type == "Transpose" and node.input[0] in consts:
        perm = _attr(node, "perm", None)
        return np.transpose(consts[node.input[0]], perm)
    return None


def embedding_from_graph(graph: Any, ids_name: str = "input_ids") -> np.ndarray:
    """E [V, d]: the constant data of the Gather/GatherND node whose indices are the ``ids_name`` input (through
    Unsqueeze, Cast, Reshape, ...). ValueError when there is not exactly one such lookup with a constant table."""
    consts = _constants(graph)
    derived, frontier, lookups = {ids_name}, [ids_name], []
    while frontier:
        name = frontier.pop()
        for node in graph.node:
            if name not in node.input:
                continue
            if node.op_type in ("Gather", "GatherND") and list(node.input).index(name) == 1:
                lookups.append(node)
            elif node.op_type in _ID_PASSTHROUGH:
                for out in node.output:
                    if out not in derived:
                        derived.add(out)
                        frontier.append(out)
    tables = [consts[n.input[0]] for n in lookups if n.input[0] in consts and consts[n.input[0]].ndim == 2]
    if len(tables) != 1:
        raise ValueError(f"expected one constant lookup table indexed by {ids_name}, found {len(tables)} "
                         f"(lookups: {[n.op_type for n in lookups]})")
    return tables[0]


def unembedding_from_graph(graph: Any, logits_name: str = "logits") -> tuple[np.ndarray, np.ndarray | None]:
    """(U [d, V], b [V] or None): the constant operands of the MatMul or Gemm (and bias Add) producing
    ``logits_name``, through reshapes. ValueError when the logits come from anything else."""
    consts, producers = _constants(graph), _producers(graph)
    node, bias = producers.get(logits_name), None
    while node is not None and node.op_type in _VIEW_OPS:
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Add":
        const = [i for i in node.input if i in consts]
        if len(const) == 1:
            bias = consts[const[0]].reshape(-1)
            node = producers.get(next(i for i in node.input if i not in consts))
            while node is not None and node.op_type in _VIEW_OPS:
                node = producers.get(node.input[0])
    if node is not None and node.op_type == "MatMul":
        U = _constant_matrix(node.input[1], consts, producers)
        if U is not None and U.ndim == 2:
            return U, bias
    if (node is not None and node.op_type == "Gemm" and bias is None and _attr(node, "transA", 0) == 0
            and float(_attr(node, "alpha", 1.0)) == 1.0):
        U = _constant_matrix(node.input[1], consts, producers)
        b = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if U is not None and U.ndim == 2 and (b is None or float(_attr(node, "beta", 1.0)) == 1.0):
            return (U.T if _attr(node, "transB", 0) else U), (None if b is None else b.reshape(-1))
    raise ValueError(f"{logits_name} is not a product of the last hidden state with a constant matrix "
                     f"(produced by {None if node is None else node.op_type})")


# ------------------------------------------------------------------------------ the target


class OnnxTarget(Target):
    """A decoder exported to ONNX, run by an onnxruntime.InferenceSession on the CPU (see the module docstring)."""

    tolerance = "float32"

    def __init__(self, session: Any, model: Any, name: str, *, max_positions: int, config: ModelConfig | None,
                 reference: Callable[[], Transformer] | None, version: str) -> None:
        self.session, self.name, self.version = session, name, version
        inputs = session.get_inputs()
        self._past_names = [i.name for i in inputs if i.name.startswith("past_key_values.")]
        self._output_names = [o.name for o in session.get_outputs()]
        shape: list[Any] = inputs[2].shape  # [batch, H_kv, past, d_head], the last two static
        self._kv_heads, self._head_dim = int(shape[1]), int(shape[3])
        self.vocab_size = int(session.get_outputs()[0].shape[-1])
        self.max_positions = max_positions
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self._config, self._reference = config, reference
        self._E = _table(embedding_from_graph, model.graph)  # read from the file ONNX Runtime loaded
        self._U = _table(unembedding_from_graph, model.graph)

    def _run(self, ids: Tensor, mask: np.ndarray, past: list[np.ndarray] | None) -> list[np.ndarray]:
        b = ids.shape[0]
        if past is None:
            empty = np.zeros((b, self._kv_heads, 0, self._head_dim), dtype=np.float32)
            past = [empty] * len(self._past_names)
        feed = {"input_ids": ids.detach().cpu().numpy().astype(np.int64), "attention_mask": mask}
        feed = {k: np.ascontiguousarray(v) for k, v in feed.items()} | dict(zip(self._past_names, past, strict=True))
        return list(self.session.run(self._output_names, feed))

    @staticmethod
    def _mask(ids: Tensor, attention_mask: Tensor | None) -> np.ndarray:
        if attention_mask is None:
            return np.ones(tuple(ids.shape), dtype=np.int64)
        return attention_mask.detach().cpu().bool().numpy().astype(np.int64)

    def logits(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        self.check_length(ids.shape[-1])  # the exported graph computes past the context without a word
        return torch.from_numpy(self._run(ids, self._mask(ids, attention_mask), None)[0])

    def decode(self, ids: Tensor, prefill: int, attention_mask: Tensor | None = None) -> Tensor:
        """ids[:, :prefill] with an empty past, then one token per call, each call's present fed back as past."""
        self.check_length(ids.shape[-1])
        mask = self._mask(ids, attention_mask)
        out = self._run(ids[:, :prefill], mask[:, :prefill], None)
        logits = [out[0]]
        for t in range(prefill, ids.shape[1]):
            out = self._run(ids[:, t:t + 1], mask[:, :t + 1], out[1:])
            logits.append(out[0])
        return torch.from_numpy(np.concatenate(logits, axis=1))

    def embedding_matrix(self) -> Tensor:
        if isinstance(self._E, str):
            raise NotExposed("embedding_matrix", self._E)
        return self._E

    def unembedding(self) -> tuple[Tensor, Tensor | None]:
        if isinstance(self._U, str):
            raise NotExposed("unembedding", self._U)
        return self._U

    def config(self) -> ModelConfig:
        if self._config is None:
            raise NotExposed("config", "no converter to the reference for this model")
        return self._config

    def reference_model(self) -> Transformer:
        if self._reference is None:
            raise NotExposed("reference_model", "no converter for this target")
        return self._reference()

    @property
    def capabilities(self) -> frozenset[str]:
        have = set(super().capabilities)
        if isinstance(self._E, str):
            have.discard("embedding_matrix")
        if isinstance(self._U, str):
            have.discard("unembedding")
        if self._config is None:
            have -= {"config", "reference_model"}
        return frozenset(have)


def _table(read: Callable[[Any], Any], graph: Any) -> Any:
    """``read(graph)`` as torch tensors, or the reason it could not be read (then the capability is not exposed)."""
    try:
        got = read(graph)
    except ValueError as exc:
        return str(exc)
    if isinstance(got, tuple):
        return tuple(None if a is None else torch.from_numpy(np.array(a, dtype=np.float32)) for a in got)
    return torch.from_numpy(np.array(got, dtype=np.float32))


# ------------------------------------------------------------------------------ exporting and loading


def export(step: nn.Module, past_shape: tuple[int, int], n_layers: int, vocab_size: int) -> tuple[Any, Any, str]:
    """Export ``step`` (input_ids, attention_mask, past) with dynamic batch, sequence and past lengths into a private
    temporary folder, load it into ONNX Runtime (CPU, one thread) and delete the folder.

    Returns (session, the exported ModelProto, a version string).
    """
    import onnx
    import onnxruntime as ort

    kv_heads, head_dim = past_shape
    b, t, p = 2, 3, 2  # sizes > 1 so that torch.export does not specialise any of them
    ids = torch.arange(b * t).reshape(b, t) % vocab_size
    mask = torch.ones(b, p + t, dtype=torch.long)
    mask[0, :2] = 0
    past = [torch.zeros(b, kv_heads, p, head_dim) for _ in range(2 * n_layers)]
    dyn = torch.export.Dim.DYNAMIC
    shapes = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, [{0: dyn, 2: dyn} for _ in past])
    names = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    outputs = ["logits"] + [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    quiet = logging.getLogger("torch.onnx")  # its registry warns once per missing torchvision operator
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="next-token-spec-onnx-") as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
            path = Path(folder) / "model.onnx"
            program = torch.onnx.export(step.eval(), (ids, mask, past), f=None, dynamic_shapes=shapes,
                                         input_names=["input_ids", "attention_mask", *names], output_names=outputs,
                                         artifacts_dir=folder, verbose=False)
            assert program is not None
            program.save(str(path), external_data=False)
            model = onnx.load(str(path))  # the file ONNX Runtime runs, read back: E and U come from it
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1  # tiny models: deterministic, fastest
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    finally:
        quiet.setLevel(level)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    version = f"onnxruntime {ort.__version__}, torch.onnx.export (torch {torch.__version__}, opset {opset})"
    return session, model, version


@functools.cache
def load_reference(preset_name: str) -> OnnxTarget:
    """``onnx:reference:<preset>``: the seeded weights of ``reference:<preset>``, exported and run by ONNX Runtime."""
    import reference
    from reference.presets import preset

    cfg = preset(preset_name)
    model = reference.build(cfg, seed=0)
    with torch.no_grad():
        session, proto, version = export(_ReferenceStep(model), (cfg.kv_heads, cfg.head_dim), cfg.n_layers,
                                         cfg.vocab_size)
    return OnnxTarget(session, proto, f"onnx:reference:{preset_name}", max_positions=cfg.max_positions, config=cfg,
                      reference=lambda: model, version=version)


@functools.cache
def load_hf(preset_name: str) -> OnnxTarget:
    """``onnx:hf:<preset>``: the seeded HF model of ``hf:<preset>``, exported and run by ONNX Runtime."""
    from spec.targets.hf_presets import build_hf

    model = build_hf(preset_name)
    with torch.no_grad():
        probe = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True)
    from spec.targets.hf_target import cache_keyword

    kv = _cache_tensors(getattr(probe, cache_keyword(inspect.signature(model.forward).parameters)))
    n_layers, (_, kv_heads, _, head_dim) = len(kv) // 2, kv[0].shape
    with torch.no_grad():
        session, proto, version = export(_HFStep(model, n_layers), (kv_heads, head_dim), n_layers,
                                         int(model.config.vocab_size))
    import transformers

    hf_cfg = model.config
    ctx = getattr(hf_cfg, "max_position_embeddings", 0) or getattr(hf_cfg, "n_positions", 0)
    config, reference = None, None
    try:
        from reference.convert import CONVERTERS, from_hf

        if hf_cfg.model_type in CONVERTERS:
            config, reference = CONVERTERS[hf_cfg.model_type].config(hf_cfg), functools.partial(from_hf, model)
    except ImportError:
        pass
    return OnnxTarget(session, proto, f"onnx:hf:{preset_name}", max_positions=int(ctx or 1 << 30), config=config,
                      reference=reference, version=f"{version}, transformers {transformers.__version__}")


def from_spec(rest: str, device: str, dtype: torch.dtype) -> Target:
    """The registry's ``onnx`` kind: ``onnx:reference:<preset>`` or ``onnx:hf:<preset>``, on the CPU in float32."""
    kind, _, name = rest.partition(":")
    known = {"reference": reference_presets, "hf": hf_presets}
    if kind not in known or name not in known[kind]():
        raise ValueError(f"unknown target onnx:{rest}: choose one of {', '.join(allowed())}")
    if device != "cpu":
        raise ValueError(f"target onnx:{rest} runs on ONNX Runtime's CPUExecutionProvider; device {device!r} is "
                         "not offered")
    if dtype != torch.float32:
        raise ValueError(f"target onnx:{rest} is exported in float32 only; dtype {dtype} is not offered")
    return load_reference(name) if kind == "reference" else load_hf(name)
