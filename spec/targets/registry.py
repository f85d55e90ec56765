"""Naming targets: ``reference[:preset]``, ``hf:<preset>``, ``smollm2``, ``mutant:<name>`` (the zoo), the peers
``tlens:<preset>``, ``llamacpp:smollm2`` and ``onnx:<preset>``, ``compiled:<target>`` (any target's model under
torch.compile), ``opaque:<target>`` (any target without config, reference_model and build), or
``module.path:factory``.

A factory target is anyone's implementation: the factory returns either a ``spec.target.Target`` or any
HuggingFace-style causal LM. It is called with the keyword arguments ``device`` (a string such as "cuda") and
``dtype`` (a torch.dtype) where its signature takes them; one that takes neither cannot honour a device or dtype
other than the defaults, so asking for one is refused rather than silently ignored.

Every input that cannot name a working target is refused with spec.errors.InputError, one line naming the spec
and what is allowed: an unknown kind or preset, a module that does not import, a factory that raises or returns
something that is not a causal LM, a target whose device or dtype is not the one asked for.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch
from torch import nn

from spec.errors import InputError
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
    """Build the target a spec string names, on ``device`` in ``dtype``; InputError when it cannot."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    check_device(device)
    dt = DTYPES[dtype]
    kind, _, rest = spec.partition(":")
    handler = _HANDLERS.get(kind)
    if handler is not None:
        try:
            target = handler(rest, device, dt)
        except InputError:
            raise
        except ImportError as err:  # a peer's package (the `peers` extra) is not installed
            raise InputError(f"target {spec}: needs a package that is not installed: {_one_line(err)}") from err
        except ValueError as err:  # the handlers' own refusals (an unknown preset, a device not offered)
            said = str(err) if str(err).startswith("unknown target") else f"target {spec}: {err}"
            raise InputError(_one_line(said)) from err
    elif rest:
        target = _from_factory(kind, rest, device, dt)
    else:
        raise InputError(f"unknown target {spec!r}: use reference[:preset], hf:<preset>, smollm2, mutant:<name>, "
                         "tlens:<preset>, llamacpp:smollm2, compiled:<target>, onnx:<preset>, opaque:<target> or "
                         "module.path:factory")
    check_placement(spec, target, device, dt)
    return target


def check_device(device: str) -> None:
    """``cpu`` or ``cuda[:N]`` naming a device this machine has; InputError otherwise."""
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"device must be cpu or cuda[:N], got {device!r}") from None
    if d.type == "cpu" and d.index in (None, 0):
        return
    if d.type != "cuda":
        raise InputError(f"device must be cpu or cuda[:N], got {device!r}")
    if not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    if d.index is not None and d.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_placement(spec: str, target: Target, device: str, dtype: torch.dtype) -> None:
    """The built target reports the device and dtype asked for; else InputError (a run on another device or dtype
    than the header says would be a silently wrong answer)."""
    want, got = torch.device(device), torch.device(target.device)
    if got.type != want.type or (want.index is not None and got.index not in (None, want.index)):
        raise InputError(f"target {spec}: asked for device {device}, but the target is on {got}")
    if target.dtype != dtype:
        raise InputError(f"target {spec}: asked for dtype {_name(dtype)}, but the target computes in "
                         f"{_name(target.dtype)}")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _one_line(message: object) -> str:
    """The first line of an error message (a person reads one line; the rest is a traceback's business)."""
    text = str(message).strip()
    return text.splitlines()[0] if text else ""


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


def _compiled(rest: str, device: str, dtype: torch.dtype) -> Target:
    import spec.targets.compiled as compiled  # torch.compile (Inductor) around any other target's model

    return compiled._handler(rest, device, dtype)


def _opaque(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets import opaque  # any other target without config, reference_model and build

    return opaque._handler(rest, device, dtype)


def _onnx(rest: str, device: str, dtype: torch.dtype) -> Target:
    from spec.targets import onnx_runtime  # needs the `peers` extra (onnx, onnxscript, onnxruntime)

    return onnx_runtime._handler(rest, device, dtype)


_HANDLERS: dict[str, Callable[[str, str, torch.dtype], Target]] = {"reference": _reference, "hf": _hf,
                                                                    "smollm2": _smollm2, "mutant": _mutant,
                                                                    "tlens": _tlens, "llamacpp": _llamacpp,
                                                                    "compiled": _compiled, "onnx": _onnx,
                                                                    "opaque": _opaque}


def register(kind: str, handler: Callable[[str, str, torch.dtype], Target]) -> None:
    """Add a target kind (used by spec.targets.smollm2 and by plugins)."""
    _HANDLERS[kind] = handler


def _from_factory(module: str, attr: str, device: str, dtype: torch.dtype) -> Target:
    """Import ``module``, call ``attr`` (with device/dtype where it takes them), wrap what it returns."""
    spec = f"{module}:{attr}"
    if not all(part.isidentifier() for part in module.split(".")) or not attr.isidentifier():
        raise InputError(f"target {spec!r}: not a target name; a factory target is module.path:function "
                         "(Python identifiers)")
    factory = getattr(_import(spec, module), attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"target {spec}: no callable {attr!r} in module {module!r}")
    try:
        made = factory(**_placement_kwargs(spec, factory, device, dtype))
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"target {spec}: the factory raised {type(err).__name__}: {_one_line(err)}") from err
    if isinstance(made, Target):
        return made
    if isinstance(made, nn.Module):
        return _causal_lm(spec, made)
    raise InputError(f"target {spec}: the factory returned {type(made).__name__}; expected a spec.target.Target "
                     "or a HuggingFace-style causal LM (torch.nn.Module)")


def _import(spec: str, module: str) -> object:
    try:
        return importlib.import_module(module)
    except Exception as err:  # not found, or the module's own code failed
        raise InputError(f"target {spec}: module {module!r} could not be imported: "
                         f"{type(err).__name__}: {_one_line(err)}") from err


def _placement_kwargs(spec: str, factory: Callable[..., object], device: str,
                      dtype: torch.dtype) -> dict[str, object]:
    """The keyword arguments ``device`` and ``dtype`` the factory takes; InputError when a non-default one was asked
    for and the factory cannot take it."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        params = {}  # type: ignore[assignment]
    anything = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, object] = {}
    asked = (("device", device, torch.device(device) != torch.device("cpu"), "cpu"),
             ("dtype", dtype, dtype != torch.float32, "float32"))
    for name, value, special, default in asked:
        if anything or name in params:
            kwargs[name] = value
        elif special:
            shown = value if isinstance(value, str) else _name(value)
            raise InputError(f"target {spec}: {name} {shown} was asked for, but the factory takes no {name!r} "
                             f"argument; give it a {name}= parameter, or leave --{name} at {default}")
    return kwargs


def _causal_lm(spec: str, model: nn.Module) -> Target:
    """An nn.Module as a target, if it is called like a HuggingFace causal LM; InputError otherwise."""
    from spec.targets.hf_target import HFTarget

    if next(iter(model.parameters()), None) is None:
        raise InputError(f"target {spec}: the factory returned a {type(model).__name__} with no parameters; "
                         "expected a HuggingFace-style causal LM")
    try:
        target: Target = HFTarget(model, name=spec)
        probe = torch.zeros(1, 1, dtype=torch.long, device=target.device)
        out = target.logits(probe)
    except Exception as err:
        raise InputError(f"target {spec}: the {type(model).__name__} is not called like a HuggingFace causal LM "
                         f"(model(input_ids=...).logits): {type(err).__name__}: {_one_line(err)}") from err
    if not isinstance(out, torch.Tensor):
        raise InputError(f"target {spec}: model(input_ids=...).logits is a {type(out).__name__}, not a tensor")
    return target
