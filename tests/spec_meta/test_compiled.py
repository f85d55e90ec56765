"""compiled:<target> (spec/targets/compiled.py): the inner target's own module under torch.compile, checked by claims.

One compiled reference model is shared by the module (Inductor compiles each new input variant for tens of
seconds on a small CPU): its logits are shown to come from Inductor's graphs by torch's own profiler, next to the
target's counter, and two claims run on it. Bad options never build anything. Measured on 2 cores at load ~10:
288 s with an empty Inductor cache (GEN-4 161 s: batch 1 and one-token variants), 185 s with a warm one.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings
from torch.profiler import profile

from spec import profiles  # noqa: F401  (registers the "ci" profile)
from spec.catalog import ordered
from spec.errors import InputError
from spec.runner import PASSED, run_claim
from spec.target import NotExposed
from spec.targets.compiled import CompiledTarget, Settings, parse
from spec.targets.reference_target import ReferenceTarget
from spec.targets.registry import resolve

SPEC = "compiled:reference:llama-tiny"


@pytest.fixture(scope="module")
def compiled() -> CompiledTarget:
    target = resolve(SPEC)
    assert isinstance(target, CompiledTarget)
    return target


@pytest.mark.slow
def test_logits_come_from_inductor_graphs(compiled: CompiledTarget) -> None:
    ids = torch.tensor([[5, 17, 3, 90], [1, 2, 3, 4]])
    compiled.logits(ids)  # compiles this variant
    runs = compiled.backend.runs
    with profile() as prof:
        out = compiled.logits(ids)
    inductor_calls = [e.name for e in prof.events() if e.name.startswith("## Call CompiledFxGraph")]
    assert inductor_calls, "torch's profiler saw no Inductor graph called during logits"
    # each Inductor graph the profiler saw is one the target counted (a graph with no kernels to run has no event)
    assert compiled.backend.runs - runs >= len(inductor_calls)
    # the same weights (the module compiled in place, not a copy) and the same function as the plain reference
    assert compiled.embedding_matrix().data_ptr() == compiled.inner.model.E.data_ptr()  # type: ignore[attr-defined]
    eager = resolve("reference:llama-tiny").logits(ids)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    # Dynamo breaks the reference's graph only at its input checks (int(ids.min()) and the like)
    breaks = compiled.accounting.breaks.get("logits", {})
    assert breaks and all("Tensor.item()" in reason for reason in breaks), breaks


def test_a_call_that_runs_no_compiled_graph_fails(compiled: CompiledTarget) -> None:
    with pytest.raises(AssertionError, match="ran no compiled graph"), compiled._through("logits"):
        compiled.inner.logits  # noqa: B018  (nothing is computed)


@pytest.mark.slow
def test_parts_compile_as_one_graph(compiled: CompiledTarget) -> None:
    x = torch.randn(2, 5, 32)
    for part in ("norm1", "attention"):
        runs = compiled.backend.runs
        got = getattr(compiled.sublayers(1), part)(x)
        torch.testing.assert_close(got, getattr(compiled.inner.sublayers(1), part)(x), atol=1e-5, rtol=1e-5)
        assert compiled.backend.runs == runs + 1, part  # one graph, no eager piece around it
    assert "sublayers.attention" not in compiled.accounting.breaks


@pytest.mark.slow
def test_queries_keys_compile_with_the_layer_symbolic(compiled: CompiledTarget) -> None:
    """Under dynamic=True Dynamo passes the layer index as a symbolic int: the inner method must trace with it (an
    index it could not trace, range(n)[layer], failed POS-3, ATT-1 and ATT-2 on this target with 0 examples)."""
    ids = torch.tensor([[5, 17, 3, 90]])
    for layer in (0, 1, -1):
        got, want = compiled.queries_keys(layer, ids), compiled.inner.queries_keys(layer, ids)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled.queries_keys(-1, ids)[0], compiled.inner.queries_keys(1, ids)[0],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(IndexError, match="layer 2: out of range for 2 layers"):
        compiled.inner.queries_keys(2, ids)


class _BranchingNorm(ReferenceTarget):
    """The reference with a final norm that branches on a tensor's value, which Dynamo cannot capture."""

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.final_norm(h) if bool(h.abs().sum() >= 0) else h


def test_a_part_that_breaks_the_graph_is_not_exposed() -> None:
    target = CompiledTarget(_BranchingNorm.from_preset("llama-tiny"))
    for _ in range(2):  # the second time from the recorded reason, without tracing again
        with pytest.raises(NotExposed, match="cannot capture final_norm as one graph"):
            target.final_norm(torch.randn(1, 3, 32))
    assert target.backend.graphs == 0


@pytest.mark.slow
@pytest.mark.parametrize("claim", ["GEN-4", "ATT-4"])
def test_claims_pass(compiled: CompiledTarget, claim: str) -> None:
    chosen = next(c for c in ordered() if c.id == claim)
    result = run_claim(chosen, compiled, profile=settings.get_profile("ci"), target_spec=SPEC, profile_name="ci")
    assert result.status == PASSED, f"{result.detail}\n{result.counterexample}"
    assert compiled.accounting.runs["logits"] > 0


@pytest.mark.hf
def test_what_is_not_exposed_says_why() -> None:
    hf = resolve("compiled:hf:llama")  # nothing is compiled before the first call
    assert isinstance(hf, CompiledTarget)
    assert {"residual_states", "attention_weights", "queries_keys", "sublayers", "embed"} <= set(hf.withheld)
    assert {"decode", "generate", "final_norm", "unembedding"} <= hf.capabilities
    assert not hf.capabilities & {"tokenizer", "softmax", "sample", "build", "residual_states"}
    with pytest.raises(Exception, match="Dynamo does not guard on hooks"):
        hf.residual_states(torch.tensor([[1, 2]]))


def test_options_pass_through() -> None:
    assert parse("reference:llama-tiny") == (Settings(), "reference:llama-tiny")
    got, inner = parse("mode=max-autotune-no-cudagraphs,dynamic=auto,fullgraph=true:hf:llama")
    assert inner == "hf:llama"
    assert got == Settings(mode="max-autotune-no-cudagraphs", dynamic=None, fullgraph=True)
    got, _ = parse("epilogue_fusion=false,max_autotune_gemm_search_space=EXHAUSTIVE:reference")
    assert dict(got.options) == {"epilogue_fusion": False, "max_autotune_gemm_search_space": "EXHAUSTIVE"}
    assert parse("backend=aot_eager:my.module:factory")[0].backend == "aot_eager"


@pytest.mark.parametrize(("spec", "message"), [
    ("compiled:", "name the target to compile"),
    ("compiled:dynamic=false", "name the target to compile"),
    ("compiled:modes=default:hf:llama", "unknown option 'modes'"),
    ("compiled:mode=fast:hf:llama", "mode must be one of default, lite, .*max-autotune-no-cudagraphs"),
    ("compiled:dynamic=yes:hf:llama", "dynamic must be true, false or auto, got 'yes'"),
    ("compiled:fullgraph=1:hf:llama", "fullgraph must be true or false"),
    ("compiled:backend=tvm:hf:llama", "backend must be one of inductor, aot_eager, eager"),
    ("compiled:backend=eager,mode=max-autotune:hf:llama", "mode: only for backend=inductor, not backend=eager"),
    ("compiled:mode=max-autotune,epilogue_fusion=false:hf:llama", "give mode or Inductor options"),
    ("compiled:epilogue_fusion=maybe:hf:llama", "epilogue_fusion takes a bool, got 'maybe'"),
    ("compiled:dynamic=true,dynamic=false:hf:llama", "'dynamic' given twice"),
    ("compiled:dynamic:hf:llama", "not a target name"),
    ("compiled:max_autotune_gemm_search_space=ALL:hf:llama", "must be one of DEFAULT, EXHAUSTIVE"),
    ("compiled:compiled:hf:llama", "compiling a compiled target"),
    ("compiled:hf:no-such-family", "hf"),
])
def test_bad_options_are_refused(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve(spec)
