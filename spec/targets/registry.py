"""Naming targets: a spec ``kind:rest`` is built by its kind's public function, ``from_spec(rest, device, dtype)`` in
the module :data:`KINDS` names (``reference[:preset]``, ``hf:<preset>``, ``smollm2``, ``mutant:<name>``, the peers
``tlens:``, ``llamacpp:`` and ``onnx:``, ``compiled:<target>``, ``opaque:<target>``); any other ``module.path:factory``
is anyone's implementation. KINDS is the one list of kinds: the command line's help and errors, the pytest plugin's
and the README's tables are made from it (the README's checked by a test). A kind's module is imported only when a
target of that kind is built, and no module adds itself here on import; :func:`register` adds a kind at run time.

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
from dataclasses import dataclass

import torch
from torch import nn

from spec.errors import InputError
from spec.target import Target

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


FACTORY = "module.path:factory"  # any other ``module:function``: anyone's implementation (not a kind of its own)


@dataclass(frozen=True)
class Kind:
    """A target kind: the word before the first ``:``, the forms a spec of it takes, one line on what it is, and the
    public function that builds one, ``module.function(rest, device, dtype)`` (``rest``: the spec after ``kind:``).
    The module is imported only when a target of this kind is built: a kind's optional packages (the ``peers``
    extra) are never needed to name, list or refuse one."""

    name: str
    forms: tuple[str, ...]
    about: str
    module: str = ""
    function: str = "from_spec"
    handler: Callable[[str, str, torch.dtype], Target] | None = None  # a kind added by register()

    def builder(self) -> Callable[[str, str, torch.dtype], Target]:
        """The function that builds a target of this kind (importing its module)."""
        if self.handler is not None:
            return self.handler
        built: Callable[[str, str, torch.dtype], Target] = getattr(importlib.import_module(self.module),
                                                                   self.function)
        return built


# The built-in kinds, in the order every list of them shows. The README's tables of targets list exactly these
# forms (and FACTORY); tests/spec_meta/test_registry.py holds them to it.
BUILTIN_KINDS: tuple[Kind, ...] = (
    Kind("reference", ("reference[:preset]",), "the reference with a tiny named preset (default llama-tiny)",
         "spec.targets.reference_target"),
    Kind("hf", ("hf:<preset>",), "a HuggingFace architecture from a tiny config with seeded random weights",
         "spec.targets.hf_presets"),
    Kind("smollm2", ("smollm2", "smollm2:hf"), "SmolLM2-135M-Instruct from its GGUF file, by the reference's "
         "loader / by transformers", "spec.targets.smollm2"),
    Kind("mutant", ("mutant:<name>",), "a deliberately broken reference or HF model (the mutant zoo)",
         "spec.targets.mutants"),
    Kind("opaque", ("opaque:<target>",), "any target without config, reference_model and build",
         "spec.targets.opaque"),
    Kind("tlens", ("tlens:<preset>", "tlens:smollm2"), "TransformerLens's HookedTransformer (the peers extra)",
         "spec.targets.tlens"),
    Kind("llamacpp", ("llamacpp:smollm2",), "llama.cpp on the SmolLM2 GGUF file (the peers extra)",
         "spec.targets.llamacpp"),
    Kind("onnx", ("onnx:reference:<preset>", "onnx:hf:<preset>"), "a seeded model exported to ONNX, run by ONNX "
         "Runtime (the peers extra)", "spec.targets.onnx_runtime"),
    Kind("compiled", ("compiled:<target>",), "any target's model under torch.compile (options: "
         "compiled:key=value,...:<target>)", "spec.targets.compiled"),
)
KINDS: dict[str, Kind] = {k.name: k for k in BUILTIN_KINDS}  # and any register() added


def forms() -> list[str]:
    """Every form a target spec takes, kind by kind, then FACTORY: what the help and the errors list."""
    return [f for k in KINDS.values() for f in k.forms] + [FACTORY]


def forms_text() -> str:
    """The forms as one phrase, ``reference[:preset], hf:<preset>, ... or module.path:factory``."""
    *first, final = forms()
    return f"{', '.join(first)} or {final}"


def kinds_help() -> str:
    """Each kind's forms and, on the next line, what it is (``next-token-spec check -h``'s list)."""
    rows = [(", ".join(k.forms), k.about) for k in KINDS.values()]
    rows.append((FACTORY, "your implementation: a Target or a HuggingFace-style causal LM"))
    return "\n".join(f"  {f}\n      {about}" for f, about in rows)


def resolve(spec: str, *, device: str = "cpu", dtype: str = "float32") -> Target:
    """Build the target a spec string names, on ``device`` in ``dtype``; InputError when it cannot."""
    dt = check_dtype(dtype)
    check_device(device)
    check_form(spec)
    kind, _, rest = spec.partition(":")
    known = KINDS.get(kind)
    if known is not None:
        try:
            target = known.builder()(rest, device, dt)
        except InputError:
            raise
        except ImportError as err:  # a peer's package (the `peers` extra) is not installed
            raise InputError(f"target {spec}: needs a package that is not installed: {_one_line(err)}") from err
        except ValueError as err:  # the handlers' own refusals (an unknown preset, a device not offered)
            said = str(err) if str(err).startswith("unknown target") else f"target {spec}: {err}"
            raise InputError(_one_line(said)) from err
    else:
        target = _from_factory(kind, rest, device, dt)
    check_placement(spec, target, device, dt)
    return target


def check_form(spec: str) -> None:
    """InputError unless ``spec`` has the form of a target: a known kind, or ``module.path:function`` (Python
    identifiers). Nothing is imported or built, so a typo is refused before any work (the pytest plugin checks its
    --target values with it at start-up); whether the named preset, module or factory exists is resolve's to find."""
    if not isinstance(spec, str):
        raise InputError(f"target must be a str such as reference:llama-tiny, got {type(spec).__name__}")
    kind, _, rest = spec.partition(":")
    if kind in KINDS:
        return
    if not rest:
        raise InputError(f"unknown target {spec!r}: use {forms_text()}")
    if not all(part.isidentifier() for part in kind.split(".")) or not rest.isidentifier():
        raise InputError(f"target {spec!r}: not a target name; a factory target is module.path:function "
                         "(Python identifiers)")


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype a name of :data:`DTYPES` stands for; InputError naming the choices otherwise."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


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


def register(kind: str, handler: Callable[[str, str, torch.dtype], Target], *, forms: tuple[str, ...] = (),
             about: str = "") -> None:
    """Add a target kind at run time (a third party's extension point; no built-in module calls it): ``handler(rest,
    device, dtype)`` builds the target ``kind:rest``. ``forms`` (default ``kind:<name>``) and ``about`` are shown in
    the lists of kinds."""
    KINDS[kind] = Kind(kind, forms or (f"{kind}:<name>",), about or "registered at run time", handler=handler)


def _from_factory(module: str, attr: str, device: str, dtype: torch.dtype) -> Target:
    """Import ``module``, call ``attr`` (with device/dtype where it takes them), wrap what it returns."""
    spec = f"{module}:{attr}"
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
