"""Any target seen as an opaque implementation: without its configuration, its converter and its factory.

``OpaqueTarget(inner)`` delegates every method and attribute of the protocol to ``inner`` except ``config``,
``reference_model`` and ``build`` (and so ``buildable``), which stay ``NotExposed``; ``capabilities`` is the
inner target's less those three. That is what a third-party implementation without a converter to the reference
offers: its computations, but neither its architecture as a ``ModelConfig``, nor its weights as the reference's,
nor fresh models of itself. The mutant zoo runs every mutant this way too (spec/zoo.py: the kill matrix's opaque
column), to show which bugs the catalog catches without the oracle REF-1. As a target kind:
``opaque:<any target>``, e.g. ``next-token-spec check opaque:mutant:residual-dropped``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spec.target import CAPABILITIES, Departures, Target

HIDDEN: tuple[str, ...] = ("config", "reference_model", "build")


class OpaqueTarget(Target):
    """``inner`` with ``config``, ``reference_model`` and ``build`` hidden; everything else delegated."""

    def __init__(self, inner: Target, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or f"opaque:{inner.name}"
        self.version = inner.version
        self.tolerance = inner.tolerance
        self.trained = inner.trained  # type: ignore[misc]
        self.vocab_size = inner.vocab_size
        self.max_positions = inner.max_positions
        self.max_examples = inner.max_examples
        self.realistic_examples = inner.realistic_examples
        self.device = inner.device
        self.dtype = inner.dtype

    @property
    def capabilities(self) -> frozenset[str]:
        return self.inner.capabilities - frozenset(HIDDEN)

    def departures(self) -> Departures:
        """The inner target's declarations (spec.target.Departures): what its architecture says of itself, which
        an opaque implementation's adapter would say too; not a capability."""
        return self.inner.departures()


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: OpaqueTarget, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(Target, name).__doc__
    return method


# logits and every optional capability that is a method, except the hidden ones (trained is an attribute)
DELEGATED: tuple[str, ...] = ("logits", *(c for c in CAPABILITIES if c not in HIDDEN and c != "trained"))
for _name in DELEGATED:
    setattr(OpaqueTarget, _name, _delegate(_name))


def from_spec(rest: str, device: str, dtype: Any) -> Target:
    """The registry's ``opaque:<target>`` kind: the named target, opaque."""
    from spec.targets.registry import DTYPES, resolve

    names = {dt: name for name, dt in DTYPES.items()}
    return OpaqueTarget(resolve(rest, device=device, dtype=names[dtype]), name=f"opaque:{rest}")


__all__ = ["DELEGATED", "HIDDEN", "OpaqueTarget", "from_spec"]
