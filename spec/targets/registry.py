"""Naming targets: ``reference[:preset]``, ``hf:<preset>``, ``smollm2``, ``mutant:<name>`` (the zoo), or
``module.path:factory``.

A factory target is anyone's implementation: the factory (called with no arguments)
returns either a ``spec.target.Target`` or any HuggingFace-style causal LM.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from spec.target import Target

DEFAULT_REFERENCE_PRESET = "llama-tiny"

# What plain `pytest` (and `nox -s tests`) checks the catalog against: the reference, HF itself in every family
# reference/convert/ supports (spec.targets.hf_presets), and the real trained SmolLM2 through both loaders.
# Their expected deviations are in spec/targets/expectations/ (spec.expectations.BUILTIN).
BUILTIN_TARGETS: tuple[str, ...] = (
    "reference:gpt2-tiny", "reference:llama-tiny", "reference:bloom-tiny",
    "hf:gpt2", "hf:llama", "hf:opt", "hf:gpt_neox", "hf:gptj", "hf:mistral", "hf:qwen2", "hf:gemma", "hf:phi3",
    "hf:phi", "hf:falcon", "hf:falcon-new", "hf:bloom",
    "smollm2", "smollm2:hf",
)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64,
                                  "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve(spec: str, *, device: str = "cpu", dtype: str = "float32") -> Target:
    """Build the target a spec string names, on ``device`` in ``dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dt = DTYPES[dtype]
    kind, _, rest = spec.partition(":")
    handler = _HANDLERS.get(kind)
    if handler is not None:
        return handler(rest, device, dt)
    if rest:
        return _from_factory(kind, rest)
    raise ValueError(f"unknown target {spec!r}: use reference[:preset], hf:<preset>, smollm2 or module.path:factory")


def _reference(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets.reference_target import ReferenceTarget

    return ReferenceTarget.from_preset(rest or DEFAULT_REFERENCE_PRESET, device=device, dtype=dtype)


def _hf(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets.hf_presets import build_hf
    from spec.targets.hf_target import HFTarget

    return HFTarget(build_hf(rest, device=device, dtype=dtype), name=f"hf:{rest}")


def _smollm2(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets import smollm2

    return smollm2._handler(rest, device, dtype)


def _mutant(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets import mutants

    return mutants._handler(rest, device, dtype)


def _tlens(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets import tlens  # needs the `peers` extra (transformer-lens 3.x)

    return tlens._handler(rest, device, dtype)


def _llamacpp(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets import llamacpp  # needs the `peers` extra (llama-cpp-python)

    return llamacpp._handler(rest, device, dtype)


_HANDLERS: dict[str, Callable[[str, str, torch.dtype], Target]] = {"reference": _reference, "hf": _hf,
                                                                    "smollm2": _smollm2, "mutant": _mutant,
                                                                    "tlens": _tlens, "llamacpp": _llamacpp}


def register(kind: str, handler: Callable[[str, str, torch.dtype], Target]) -> None:
    """Add a target kind (used by spec.targets.smollm2 and by plugins)."""
    _HANDLERS[kind] = handler


def _from_factory(module: str, attr: str) -> Target:
    from spec.targets.hf_target import HFTarget

    factory = getattr(importlib.import_module(module), attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"target {module}:{attr}: no callable {attr!r} in module {module!r}")
    made = factory()
    if isinstance(made, Target):
        return made
    if isinstance(made, nn.Module):
        return HFTarget(made, name=f"{module}:{attr}")
    raise TypeError(f"target {module}:{attr} returned {type(made).__name__}; expected a spec.target.Target "
                    "or a HuggingFace-style causal LM (torch.nn.Module)")
