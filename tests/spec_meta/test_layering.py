"""Meta-tests of the spec's layering (issue #15, "Seams"), read from the source with ``ast``.

- A claim module (spec/claims/*.py) imports helper modules only (spec.oracles for
  independent computations and bounds, spec.edits for model edits, spec.strategies,
  spec.probes, ...), never another claim module; spec/claims/__init__.py is the one
  exception, since importing every claim module is how it registers them.
- The figures (spec/figures.py) and the helper modules import helpers, not claims: a figure
  draws what the claim's oracle computes, so the picture and the property cannot drift.
- A test module imports helpers, never another test module (nor a conftest): shared test
  code belongs in a helper, so each test file can be read, run and moved on its own.

The checker itself is tested on snippets, so a pass means the rule holds, not that the
checker is blind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = "spec.claims"
HELPERS = ("oracles", "edits", "strategies", "probes", "tolerance", "target")


def _module_name(path: Path) -> str:
    """The dotted name a file under ROOT is imported as (``spec/claims/att.py`` -> ``spec.claims.att``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, str]]:
    """(line, the import as written, every dotted name it may import) for each import statement of ``source``,
    a module named ``module``; relative imports are resolved against its package."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, f"import {alias.name}", alias.name))
        elif isinstance(node, ast.ImportFrom):
            written = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[:len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.append((node.lineno, written, base))
            found += [(node.lineno, written, f"{base}.{a.name}" if base else a.name) for a in node.names]
    return found


def claim_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` (module ``module``) that reach a claim module: ``line N: <import>``."""
    bad: dict[tuple[int, str], None] = {}
    for line, written, name in imported_modules(source, module, is_package):
        if name == CLAIMS or name.startswith(CLAIMS + "."):
            bad[(line, written)] = None
    return [f"line {line}: {written}" for line, written in bad]


def _test_module_names() -> set[str]:
    return {p.stem for p in (ROOT / "tests").rglob("*.py")}


def cross_test_imports(source: str, test_modules: set[str]) -> list[str]:
    """The imports of a test module's ``source`` that reach another test module, a conftest or the tests
    package (relative imports resolve inside it): ``line N: <import>``."""
    bad: dict[tuple[int, str], None] = {}
    for line, written, name in imported_modules(source, "tests._"):
        top = name.split(".")[0]
        if top == "tests" or top in test_modules:
            bad[(line, written)] = None
    return [f"line {line}: {written}" for line, written in bad]


def _layered_files() -> list[Path]:
    claims = sorted(p for p in (ROOT / "spec" / "claims").glob("*.py") if p.name != "__init__.py")
    return [*claims, ROOT / "spec" / "figures.py", *(ROOT / "spec" / f"{h}.py" for h in HELPERS)]


def test_claims_figures_and_helpers_import_no_claim_module() -> None:
    """No claim module imports another; spec/figures.py and the helper modules import no claim module."""
    files = _layered_files()
    assert len(files) >= 12, [str(f) for f in files]  # the eleven claim modules, the figures, the helpers
    problems = []
    for path in files:
        rel = path.relative_to(ROOT)
        problems += [f"{rel} {hit}" for hit in claim_imports(path.read_text(), _module_name(path))]
    assert not problems, ("these import a claim module; import the shared code from a helper module "
                          "(spec/oracles.py, spec/edits.py, spec/strategies.py, ...) instead:\n" + "\n".join(problems))


def test_test_modules_import_no_other_test_module() -> None:
    """Tests import helpers (spec, reference, examples, ...), never another test module or a conftest."""
    names = _test_module_names()
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert files
    problems = []
    for path in files:
        problems += [f"{path.relative_to(ROOT)} {hit}" for hit in cross_test_imports(path.read_text(), names)]
    assert not problems, "these test modules import another test module:\n" + "\n".join(problems)


@pytest.mark.parametrize(("source", "module", "flagged"), [
    ("from spec.claims.emb import live_model", "spec.claims.att", True),
    ("from spec.claims import dec", "spec.claims.gen", True),
    ("import spec.claims.soft", "spec.claims.out", True),
    ("import spec.claims", "spec.figures", True),
    ("from spec import claims", "spec.figures", True),
    ("from spec.claims import out, soft, tr", "spec.figures", True),
    ("from . import emb", "spec.claims.tok", True),
    ("from .soft import within", "spec.claims.out", True),
    ("from .claims.tr import BAND", "spec.figures", True),
    ("from .. import claims", "spec.claims.att", True),
    ("def f():\n    from spec.claims.dec import check_greedy_step", "spec.claims.gen", True),
    ("from spec.oracles import exact_softmax, within", "spec.claims.out", False),
    ("from spec.edits import live_model", "spec.claims.att", False),
    ("from spec import oracles", "spec.figures", False),
    ("from spec.catalog import claim", "spec.claims.dec", False),
    ("from . import oracles", "spec.figures", False),
    ("from ..strategies import seeds", "spec.claims.dec", False),
])
def test_the_claim_import_check_has_power(source: str, module: str, flagged: bool) -> None:
    """The checker flags every spelling of a claim-module import (absolute, relative, nested) and nothing else."""
    assert bool(claim_imports(source, module)) == flagged, (source, claim_imports(source, module))


@pytest.mark.parametrize(("source", "flagged"), [
    ("from test_ties import reference_sampler", True),
    ("from tests.spec_meta.test_claims_tr import _smollm2", True),
    ("import conftest", True),
    ("from conftest import fixture", True),
    ("from . import conftest", True),
    ("from spec.oracles import Keep", False),
    ("from spec import strategies", False),
    ("import reference", False),
    ("from examples.hf_llama_adapter import llama", False),
])
def test_the_test_import_check_has_power(source: str, flagged: bool) -> None:
    """The checker flags a test module importing another test module or a conftest, and not helper imports."""
    names = {"test_ties", "test_claims_tr", "conftest"}
    assert bool(cross_test_imports(source, names)) == flagged, (source, cross_test_imports(source, names))
