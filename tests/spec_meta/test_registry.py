"""Issue #15, seams: spec.targets.registry.KINDS is the one list of target kinds.

Each kind is built by a public function of its own module, imported only when a target of that kind is built; no
module adds itself to the registry on import; the command line's help and errors, the plugin's help and the
README's tables list exactly the registry's forms.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from spec.cli import main
from spec.errors import InputError
from spec.targets import registry

ROOT = Path(__file__).resolve().parents[2]


def _listed(message: str) -> list[str]:
    """The forms a message lists after ``use ``: ``a, b, c or d`` -> [a, b, c, d]."""
    listed = message.split("use ", 1)[1]
    first, last = listed.rsplit(" or ", 1)
    return [*first.split(", "), last]


def test_every_kind_is_built_by_a_public_function_of_its_own_module() -> None:
    import importlib

    assert [k.name for k in registry.BUILTIN_KINDS] == list(registry.KINDS)[: len(registry.BUILTIN_KINDS)]
    for kind in registry.BUILTIN_KINDS:
        assert kind.module.startswith("spec.targets.") and not kind.function.startswith("_"), kind
        assert kind.handler is None, kind
        module = importlib.import_module(kind.module)
        built = kind.builder()
        assert built is getattr(module, kind.function) and built.__module__ == kind.module, kind
        assert built.__doc__, f"{kind.module}.{kind.function} has no docstring"
        assert all(f == kind.name or f.startswith((f"{kind.name}:", f"{kind.name}[")) for f in kind.forms), kind


@pytest.mark.parametrize("spec", ["reference", "reference:gpt2-tiny", "hf:gpt2", "mutant:attn-scale-none",
                                  "opaque:reference:gpt2-tiny"])
def test_kinds_resolve_through_their_public_function(spec: str) -> None:
    kind, _, rest = spec.partition(":")
    import torch

    direct = registry.KINDS[kind].builder()(rest, "cpu", torch.float32)
    assert registry.resolve(spec).describe() == direct.describe()


def test_an_unknown_kind_lists_exactly_the_registrys_forms() -> None:
    with pytest.raises(InputError) as info:
        registry.resolve("nope")
    assert _listed(str(info.value)) == registry.forms()
    assert registry.forms() == [f for k in registry.KINDS.values() for f in k.forms] + [registry.FACTORY]


def test_the_cli_lists_the_registrys_forms_in_its_help_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "nope", "--claim", "EMB-2"]) == 2
    err = capsys.readouterr().err
    assert _listed(err.strip()) == registry.forms(), err
    with pytest.raises(SystemExit):
        main(["check", "-h"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert registry.forms_text() in help_text
    for kind in registry.KINDS.values():
        assert f"{', '.join(kind.forms)} {kind.about}" in help_text, kind.name


def test_the_plugin_lists_the_registrys_forms_in_its_help() -> None:
    from spec import plugin

    helps: dict[str, str] = {}

    class Group:
        def addoption(self, name: str, **kw: object) -> None:
            helps[name] = str(kw.get("help", ""))

    class Parser:
        def getgroup(self, name: str) -> Group:
            return Group()

        def addini(self, *args: object, **kw: object) -> None:
            pass

    plugin.pytest_addoption(Parser())  # type: ignore[arg-type]
    assert registry.forms_text() in helps["--target"]


def test_a_registered_kind_is_listed_and_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    from spec.targets.reference_target import ReferenceTarget

    monkeypatch.setattr(registry, "KINDS", dict(registry.KINDS))  # the registration is undone after the test
    registry.register("mine", lambda rest, device, dtype: ReferenceTarget.from_preset(rest, device=device,
                                                                                      dtype=dtype))
    assert registry.resolve("mine:gpt2-tiny").describe() == "reference:gpt2-tiny 0.1.0"
    assert "mine:<name>" in registry.forms()
    with pytest.raises(InputError) as info:
        registry.resolve("nope")
    assert _listed(str(info.value)) == registry.forms()


def test_importing_the_target_modules_leaves_the_registry_alone() -> None:
    """In a fresh interpreter: importing the registry imports no kind's module, and importing every module of
    spec.targets (smollm2 among them; a peer whose package is missing is passed over) changes no entry."""
    code = """
import importlib, pkgutil, sys
import spec.targets
from spec.targets import registry
before = dict(registry.KINDS)
loaded = sorted(k.module for k in registry.KINDS.values() if k.module in sys.modules)
assert loaded == [], loaded
import spec.targets.smollm2
assert registry.KINDS == before, "spec.targets.smollm2 changed the registry"
for m in pkgutil.iter_modules(spec.targets.__path__):
    try:
        importlib.import_module("spec.targets." + m.name)
    except ImportError:
        pass
assert registry.KINDS == before, sorted(set(registry.KINDS) ^ set(before))
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def _readme_forms() -> list[str]:
    """The forms in the first column of the README's tables of targets (those headed ``| target |``)."""
    found: list[str] = []
    in_table = False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| target |"):
            in_table = True
        elif in_table and line.startswith("|"):
            cell = line.split("|")[1]
            found += re.findall(r"`([^`]+)`", cell)
        else:
            in_table = False
    return found


def test_the_readme_lists_exactly_the_registrys_kinds() -> None:
    readme = _readme_forms()
    builtin = [f for k in registry.BUILTIN_KINDS for f in k.forms] + [registry.FACTORY]
    assert len(readme) == len(set(readme)), readme
    assert set(readme) == set(builtin), (
        f"README.md's tables of targets and spec.targets.registry.BUILTIN_KINDS differ: only in the README "
        f"{sorted(set(readme) - set(builtin))}, only in the registry {sorted(set(builtin) - set(readme))}")


def test_the_target_protocols_pointer_leads_to_a_real_section() -> None:
    import spec.target

    doc = spec.target.__doc__ or ""
    named = re.findall(r"([\w/.-]+\.md), section \"([^\"]+)\"", " ".join(doc.split()))
    assert {path for path, _ in named} == {"README.md", "docs/adapters.md"}, doc
    for path, section in named:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^#+ {re.escape(section)}$", text, re.M), (path, section)
