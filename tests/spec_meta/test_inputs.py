"""Issue #14, the CLI and API half: every bad input gets one clear line (exit 2) or correct behaviour.

Most inputs here must be refused before any model is built; the tests make building one an error
(``no_build``) so a refusal that comes too late fails them. The Hypothesis tests at the end drive the
command line and the API with generated bad input and check the contract: exit 2 and one line on
stderr (or spec.errors.InputError from the API), never another exception, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spec.catalog import CATALOG, load_all
from spec.cli import main
from spec.errors import InputError
from spec.expectations import MAX_BYTES, MissingExpectations, for_target, load
from spec.pool import MAX_JOBS
from spec.runner import FAILED, MAX_TIMEOUT, PASSED, Result, ShrinkBudgetSpent, run_claim
from spec.targets import registry
from spec.targets.reference_target import ReferenceTarget

load_all()
IDS = set(CATALOG)
FAST = settings(max_examples=3, derandomize=True, database=None)
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


class Built(Exception):
    """Raised in place of building a model: the input got past every check."""


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any target (or running any claim) is an error: a refusal must come before it."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise Built(args)

    monkeypatch.setattr(registry, "resolve", refuse)
    monkeypatch.setattr("spec.explain.builtin_target", refuse)
    monkeypatch.setattr("spec.runner.run_catalog", refuse)
    monkeypatch.setattr("spec.runner.run_claim", refuse)
    monkeypatch.setattr("spec.zoo.run_both", refuse)
    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", refuse)  # zoo --jobs N > 1
    monkeypatch.setattr("spec.figures.save", refuse)  # a figure is never written either


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def refused(argv: list[str], *words: str) -> str:
    """Assert main(argv) exits 2 with one line on stderr naming each of ``words``; that line."""
    code, _, err = run(argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("next-token-spec: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


# -- a module of factories, importable for the duration of a test ---------------------------------------------
FACTORIES = '''
import torch
from torch import nn
from spec.target import Target
from spec.targets.reference_target import ReferenceTarget

def raises():
    raise RuntimeError("no weights here")

def returns_none():
    return None

def identity():
    return nn.Identity()

def linear():
    return nn.Linear(4, 4)

def plain():
    return ReferenceTarget.from_preset("gpt2-tiny")

def placed(device="cpu", dtype=torch.float32):
    return ReferenceTarget.from_preset("gpt2-tiny", device=device, dtype=dtype)

def ignores(device="cpu", dtype=torch.float32):
    return ReferenceTarget.from_preset("gpt2-tiny")

def anything(**kw):
    return ReferenceTarget.from_preset("gpt2-tiny", **kw)

class LogitsOnly(Target):
    name, vocab_size = "logits-only", 11

    def logits(self, ids, attention_mask=None):
        return torch.zeros(*ids.shape, self.vocab_size)

def logits_only():
    return LogitsOnly()

class TextOnly(LogitsOnly):
    """A tokenizer and logits, nothing else (no residual states, no attention weights)."""
    name = "text-only"

    def __init__(self):
        from spec.targets.tokenizers import builtin_tokenizer

        self.tok = builtin_tokenizer()
        self.vocab_size = self.tok.vocab_size

    def tokenizer(self):
        return self.tok

def text_only():
    return TextOnly()
'''


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module name of FACTORIES (and of ``broken_import``, which raises on import)."""
    (tmp_path / "inputs_factories.py").write_text(FACTORIES)
    (tmp_path / "inputs_broken.py").write_text("raise ImportError('a dependency is missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "inputs_factories"


# -- item 1: the command line's usage and input errors ----------------------------------------------------------
def test_unknown_target_is_one_line() -> None:
    refused(["check", "nope", "--claim", "EMB-2"], "nope", "reference[:preset]")


@pytest.mark.parametrize(("spec", "words"), [
    ("inputs_missing_module:build", ("inputs_missing_module", "could not be imported")),
    ("inputs_broken:build", ("inputs_broken", "a dependency is missing")),
    ("inputs_factories:raises", ("raised RuntimeError", "no weights here")),
    ("inputs_factories:returns_none", ("returned NoneType",)),
    ("inputs_factories:identity", ("Identity", "no parameters")),
    ("inputs_factories:linear", ("Linear", "not called like a HuggingFace causal LM")),
    ("inputs_factories:nothing", ("no callable 'nothing'",)),
    ("reference:nope", ("unknown preset 'nope'",)),
])
def test_bad_factory_targets_are_one_line(factories: str, spec: str, words: tuple[str, ...]) -> None:
    refused(["check", spec, "--claim", "EMB-2", "--quiet"], spec, *words)


@pytest.mark.parametrize("argv", [
    ["check", "reference", "--report", "out.txt"],
    ["check", "reference", "--dtype", "float8"],
    ["check", "reference", "--device", "tpu"],
    ["check", "reference", "--claim", "NOPE-1"],
    ["check", "reference", "--shrink-seconds", "-1"],
    ["check", "reference", "--shrink-seconds", "nan"],
    ["check", "reference", "--shrink-seconds", "soon"],
    ["check", "reference", "--profile", "bogus"],
    ["check", "reference", "--seed", "1.5"],
    ["check", "reference", "--expectations", "x.toml", "--no-expectations"],
    ["check", "reference", "--expectations", "/nonexistent/x.toml"],
    ["explain", "hi", "--steps", "0"],
    ["explain", "hi", "--steps", "1000001"],
    ["explain", "hi", "--temperature", "-1"],
    ["explain", "hi", "--temperature", "inf"],
    ["explain", "hi", "--temperature", "nan"],
    ["explain", "hi", "--top", "0"],
    ["explain", ""],
    ["figures", "/tmp", "--only", "nope"],
    ["zoo", "--mutant", "nope"],
    ["bogus-command"],
    # found beyond the list (the audit of issue #14)
    ["check", "reference", "--report", ""],  # was ignored: the run went ahead and wrote no report
    ["check", "reference", "--timeout", "1e300"],  # was an OverflowError in the first example: a claim "failed"
    ["check", "reference", "--timeout", "0"],
    ["check", "reference", "--timeout", "nan"],
    ["check", "reference", "-j", "0"],
    ["zoo", "--jobs", "100000"],  # was taken: one process per mutant
    ["zoo", "--jobs", "0"],
    ["figures", "", "--only", "1-toy-softmax"],  # was the working directory
    ["explain", "ab\udcffc"],  # a byte that is not UTF-8 on the command line (surrogateescape): was a traceback
    ["explain", "\ud800"],
])
def test_bad_options_are_refused_before_any_work(no_build: None, argv: list[str]) -> None:
    refused(argv)


@NO_CUDA
def test_device_cuda_without_cuda_is_refused(no_build: None) -> None:
    refused(["check", "reference", "--device", "cuda"], "cuda", "not available")


def test_report_paths_are_checked_before_the_catalog_runs(no_build: None, tmp_path: Path) -> None:
    refused(["check", "reference", "--report", str(tmp_path / "out.txt")], "out.txt", ".json")
    refused(["check", "reference", "--report", str(tmp_path / "missing" / "r.json")], "does not exist")
    (tmp_path / "dir.json").mkdir()
    refused(["check", "reference", "--report", str(tmp_path / "dir.json")], "is a folder")
    with pytest.raises(Built):  # a good path gets through to the run
        run(["check", "reference", "--report", str(tmp_path / "r.json")])


# -- item 2: --device and --dtype reach factory targets ---------------------------------------------------------
def test_factories_get_device_and_dtype(factories: str) -> None:
    for name in ("placed", "anything"):
        t = registry.resolve(f"inputs_factories:{name}", dtype="float64")
        assert t.dtype == torch.float64, name


def test_a_factory_that_cannot_take_the_dtype_asked_for_is_refused(factories: str) -> None:
    with pytest.raises(InputError, match="takes no 'dtype' argument"):
        registry.resolve("inputs_factories:plain", dtype="float64")
    assert registry.resolve("inputs_factories:plain").dtype == torch.float32  # the defaults need no argument


def test_a_target_on_another_dtype_than_asked_is_refused(factories: str) -> None:
    with pytest.raises(InputError, match="asked for dtype float64, but the target computes in float32"):
        registry.resolve("inputs_factories:ignores", dtype="float64")
    refused(["check", "inputs_factories:plain", "--dtype", "float16", "--claim", "EMB-2"], "dtype float16")


# -- item 3: Ctrl-C keeps what finished ---------------------------------------------------------------------------
def test_ctrl_c_prints_and_writes_the_claims_that_finished(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []

    def fake(claim: object, target: object, **kw: object) -> Result:
        cid = str(getattr(claim, "id", ""))
        calls.append(cid)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return Result(cid, "a statement", "t", PASSED, examples=1)

    monkeypatch.setattr("spec.runner.run_claim", fake)
    out = tmp_path / "r.json"
    # -j 1: run_claim, replaced here, runs in this process (the workers' Ctrl-C is in test_jobs.py)
    code, stdout, stderr = run(["check", "reference:gpt2-tiny", "--report", str(out), "--quiet", "-j", "1"])
    assert code == 130
    assert calls[:2][0] in stdout and calls[1] in stdout and "2 passed" in stdout
    assert [r["claim"] for r in json.loads(out.read_text())] == calls[:2]
    assert "interrupted: 2 of" in stderr and str(out) in stderr


def _claim(check: object) -> object:
    from spec.catalog import Claim

    return Claim("ZZZ-7", "a claim for testing", "nowhere", (), "none", check)  # type: ignore[arg-type]


def test_a_real_keyboard_interrupt_leaves_run_claim() -> None:
    def interrupted(target: object, data: st.DataObject) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        run_claim(_claim(interrupted), ReferenceTarget.from_preset("gpt2-tiny"), profile=FAST)  # type: ignore[arg-type]
    assert not isinstance(info.value, ShrinkBudgetSpent)


def test_a_keyboard_interrupt_while_shrinking_leaves_run_claim() -> None:
    seen = [0]

    def fails_then_interrupted(target: object, data: st.DataObject) -> None:
        data.draw(st.integers(0, 100), label="n")
        seen[0] += 1
        if seen[0] == 1:
            raise AssertionError("fails")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        run_claim(_claim(fails_then_interrupted), ReferenceTarget.from_preset("gpt2-tiny"),  # type: ignore[arg-type]
                  profile=settings(FAST, max_examples=20))
    assert not isinstance(info.value, ShrinkBudgetSpent)


# -- item 4: logits of the wrong shape, dtype or device fail every claim that reads them ---------------------------
class WrongShape(ReferenceTarget):
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().logits(ids, attention_mask)[..., :-1]  # one vocabulary entry short


class WholeNumbers(ReferenceTarget):
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return (super().logits(ids, attention_mask) * 100).long()


class Elsewhere(ReferenceTarget):
    """Logits on another device than the target says it computes on (meta stands in for a GPU here)."""

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().logits(ids, attention_mask).to("meta")


@pytest.mark.parametrize("cid", ["ATT-4", "GEN-4", "OUT-7"])
@pytest.mark.parametrize(("kind", "words"), [(WrongShape, "returned shape"), (WholeNumbers, "returned dtype int64"),
                                             (Elsewhere, "returned a tensor on meta; expected the target's device")])
def test_malformed_logits_fail_on_the_first_example(cid: str, kind: type[ReferenceTarget], words: str) -> None:
    target = kind(ReferenceTarget.from_preset("gpt2-tiny").model, name="malformed")
    r = run_claim(CATALOG[cid], target, profile=FAST)
    assert r.status == FAILED and words in r.detail, (r.status, r.detail)
    assert "logits" not in vars(target)  # the check is taken off again


def test_well_formed_logits_pass_and_are_unchanged() -> None:
    target = ReferenceTarget.from_preset("gpt2-tiny")
    assert run_claim(CATALOG["OUT-7"], target, profile=FAST).status == PASSED
    assert "logits" not in vars(target)


# -- item 5: expectations files --------------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.toml", '[[deviation]]\nclaim = "GEN-3"\nreason = \n')
    with pytest.raises(InputError, match=r"bad\.toml is not valid TOML.*line 3"):
        load(f, IDS)


@pytest.mark.parametrize(("text", "key"), [
    ('deviation = {claim = "GEN-3", reason = "r"}\n', "deviation must be a list"),
    ('include = {a = "b"}\n', "include must be a list"),
    ('deviation = [1, 2]\n', "deviation must be a list of tables"),
    ('[[deviation]]\nclaim = 3\nreason = "r"\n', "claim must be a string"),
])
def test_tables_of_the_wrong_type_name_the_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    f = write(tmp_path / "typed.toml", text)
    with pytest.raises(InputError, match=key) as info:
        load(f, IDS)
    assert "typed.toml" in str(info.value)


def test_a_missing_include_names_both_files(tmp_path: Path) -> None:
    f = write(tmp_path / "main.toml", 'include = ["_gone.toml"]\n')
    with pytest.raises(InputError, match=r"main\.toml: include '_gone\.toml'.*does not exist"):
        load(f, IDS)


def test_includes_stay_in_the_including_files_folder(tmp_path: Path) -> None:
    write(tmp_path / "outside.toml", '[[deviation]]\nclaim = "GEN-3"\nreason = "r"\n')
    sub = tmp_path / "sub"
    for name in ("../outside.toml", str(tmp_path / "outside.toml")):
        f = write(sub / "main.toml", f"include = [{json.dumps(name)}]\n")
        with pytest.raises(InputError, match="relative to the including file"):
            load(f, IDS)
    (sub / "link.toml").symlink_to(tmp_path / "outside.toml")
    f = write(sub / "main.toml", 'include = ["link.toml"]\n')
    with pytest.raises(InputError, match="leads outside"):
        load(f, IDS)
    write(sub / "inner" / "_shared.toml", '[[deviation]]\nclaim = "GEN-3"\nreason = "r"\n')
    f = write(sub / "main.toml", 'include = ["inner/_shared.toml"]\n')
    assert set(load(f, IDS)) == {"GEN-3"}  # relative to the including file, below it: fine
    assert set(load(tmp_path / "outside.toml", IDS)) == {"GEN-3"}  # an absolute path given directly: fine


def _in_time(fn: object, seconds: float = 10.0) -> BaseException | None:
    """Run fn in a thread; the exception it raised; fail if it is still running after ``seconds`` (a hang)."""
    caught: list[BaseException] = []

    def go() -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as err:
            caught.append(err)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung"
    return caught[0] if caught else None


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX only")
def test_fifos_devices_folders_and_huge_files_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    for path, words in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                        (huge, "bytes"), (tmp_path, "not a regular file")):
        err = _in_time(lambda p=path: load(p, IDS))
        assert isinstance(err, InputError) and words in str(err), (path, err)
    code, _, stderr = run(["check", "reference", "--expectations", str(fifo), "--claim", "EMB-2"])
    assert code == 2 and "not a regular file" in stderr


def test_a_missing_expectations_path_is_still_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        for_target(tmp_path / "none", "reference", IDS)
    assert issubclass(MissingExpectations, InputError)


# -- item 6: explain and figures -------------------------------------------------------------------------------------
def test_explain_refuses_a_model_smaller_than_its_tokenizer() -> None:
    refused(["explain", "The storm is", "--target", "reference:gpt2-tiny"], "vocabulary has", "tokenizer")


def test_figures_refuse_a_model_smaller_than_its_tokenizer(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    refused(["figures", str(tmp_path), "--only", "2-temperature", "--target", "reference:gpt2-tiny"],
            "fewer than its tokenizer's")


# -- item 7: the pytest plugin ----------------------------------------------------------------------------------------
pytest_plugins = ["pytester"]


def test_the_plugin_registers_the_cuda_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.cuda\ndef test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("--strict-markers", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@NO_CUDA
def test_pytest_device_cuda_without_cuda_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("--device", "cuda", "-p", "no:randomly", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--device cuda: CUDA is not available*"])


# -- item 8: figures never write through a link -----------------------------------------------------------------------
def test_figures_refuse_to_write_through_a_symlink(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "1-toy-softmax.svg").symlink_to(precious)
    refused(["figures", str(out), "--only", "1-toy-softmax"], "symbolic link")
    assert precious.read_text() == "mine"
    assert not (out / "1-toy-softmax.png").exists()  # refused before anything was written
    (out / "1-toy-softmax.svg").unlink()
    assert run(["figures", str(out), "--only", "1-toy-softmax"])[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["1-toy-softmax.png", "1-toy-softmax.svg"]  # no temp left


# -- item 9: generated bad input ---------------------------------------------------------------------------------------
NUMBERS = st.one_of(st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                    st.sampled_from(["nan", "-inf", "inf", "", "1e400", "0x10", " 3", "1_000", "٣"]),
                    st.text(max_size=8))


def contract(argv: list[str]) -> int | None:
    """main(argv) either refuses with exit 2 and one line, or gets to building a model (None)."""
    try:
        code, _, err = run(argv)
    except Built:
        return None
    assert code == 2, (argv, code, err)
    assert err.count("\n") == 1 and err.startswith("next-token-spec: error: ") and "Traceback" not in err, err
    return code


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _whole(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _as_option(value: str) -> bool:
    """Whether argparse takes ``value`` for an option flag rather than a value (it then refuses: no value given)."""
    return value.startswith("-") and not re.fullmatch(r"-\d+|-\d*\.\d+", value)


@FUZZ
@given(value=NUMBERS)
def test_numeric_options_refused_exactly_when_bad(no_build: None, value: str) -> None:
    if _as_option(value):  # argparse's own reading of a leading '-': only the contract holds
        for option in ("--temperature", "--steps", "--top"):
            contract(["explain", "hi", option, value])
        for option in ("--shrink-seconds", "--seed", "--timeout", "-j"):
            contract(["check", "reference", option, value])
        contract(["zoo", "--jobs", value])
        return
    x, n = _number(value), _whole(value)
    temperature_ok = x is not None and math.isfinite(x) and x >= 0
    assert (contract(["explain", "hi", "--temperature", value]) is None) == temperature_ok
    assert (contract(["explain", "hi", "--steps", value]) is None) == (n is not None and 1 <= n <= 1000)
    assert (contract(["explain", "hi", "--top", value]) is None) == (n is not None and n >= 1)
    shrink_ok = x is not None and x >= 0
    assert (contract(["check", "reference", "--claim", "EMB-2", "--shrink-seconds", value]) is None) == shrink_ok
    assert (contract(["check", "reference", "--claim", "EMB-2", "--seed", value]) is None) == (n is not None)
    timeout_ok = x is not None and 0 < x <= MAX_TIMEOUT
    assert (contract(["check", "reference", "--claim", "EMB-2", "--timeout", value]) is None) == timeout_ok
    jobs_ok = n is not None and 1 <= n <= MAX_JOBS
    assert (contract(["check", "reference", "--claim", "EMB-2", "-j", value]) is None) == jobs_ok
    assert (contract(["zoo", "--mutant", "attn-scale-none", "--jobs", value]) is None) == jobs_ok


@FUZZ
@given(cid=st.text(max_size=12), path=st.text(max_size=40), prompt=st.text(max_size=20))
def test_claim_ids_paths_and_prompts(no_build: None, cid: str, path: str, prompt: str) -> None:
    assume(cid not in CATALOG and not cid.startswith("-") and not path.startswith("-") and not prompt.startswith("-"))
    assert contract(["check", "reference", "--claim", cid]) == 2
    contract(["check", "reference", "--report", path])
    contract(["check", "reference", "--expectations", path])
    assert (contract(["explain", prompt, "--target", "builtin"]) is None) == bool(prompt)


RAW = st.binary(max_size=30).map(os.fsdecode)  # what argv holds for arbitrary bytes: non-UTF-8 as lone surrogates


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@FUZZ
@given(prompt=RAW | st.text(st.characters(codec=None, categories=["Cs", "Ll", "Zs"]), max_size=10),
       path=RAW)
def test_random_bytes_as_prompts_and_paths(no_build: None, tmp_path_factory: pytest.TempPathFactory, prompt: str,
                                           path: str) -> None:
    """Prompts: refused exactly when empty or not UTF-8 (a lone surrogate), else the model is asked for. Paths (for
    --report, --expectations, figures' OUTDIR under a temporary folder): exit 2 and one line, or on to the work."""
    assume(not prompt.startswith("-") and not path.startswith("-"))
    assert (contract(["explain", prompt, "--target", "builtin"]) is None) == (bool(prompt) and _utf8(prompt))
    contract(["check", "reference", "--report", path])
    contract(["check", "reference", "--expectations", path])
    out = tmp_path_factory.mktemp("figures")
    contract(["figures", str(out / path) if path else "", "--only", "1-toy-softmax"])


def _importable(module: str) -> bool:
    import importlib.util

    top = module.split(".")[0]
    try:
        return top in sys.modules or importlib.util.find_spec(top) is not None
    except (ValueError, ImportError):
        return False


@FUZZ
@given(spec=st.text(max_size=30))
def test_random_target_specs_are_input_errors(spec: str) -> None:
    kind = spec.partition(":")[0]
    assume(kind not in registry.KINDS and not _importable(kind))  # never import or build a real thing
    with pytest.raises(InputError) as info:
        registry.resolve(spec)
    assert "\n" not in str(info.value)


@FUZZ
@given(kind=st.sampled_from(["reference", "hf", "mutant", "smollm2", "llamacpp"]),
       rest=st.text(min_size=1, max_size=20))
def test_random_presets_are_input_errors(kind: str, rest: str) -> None:
    import reference
    from spec.targets.hf_presets import HF_PRESETS
    from spec.targets.mutants import MUTANTS

    assume(rest not in {"hf", "smollm2", *reference.PRESETS, *HF_PRESETS, *MUTANTS})  # the real names
    with pytest.raises(InputError, match=r"target|unknown"):
        registry.resolve(f"{kind}:{rest}")


@FUZZ
@given(text=st.text(max_size=200))
def test_malformed_toml_is_an_input_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "fuzz.toml"
    f.write_text(text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load(f, IDS)
        except InputError as err:
            assert "fuzz.toml" in str(err)


@FUZZ
@given(body=st.sampled_from(['include = ', 'deviation = ', '[[deviation]]\nclaim = ', '[[deviation]]\nreason = ']),
       value=st.sampled_from(['{a = 1}', '[1]', '3', '"x"', '[["a"]]', '[{claim = 1}]', 'true', '1979-05-27']))
def test_toml_of_the_wrong_shape_is_an_input_error(tmp_path: Path, body: str, value: str) -> None:
    f = tmp_path / "shape.toml"
    f.write_text(body + value + "\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load(f, IDS)
        except InputError as err:
            assert "shape.toml" in str(err)


def test_end_to_end_one_line_and_exit_2() -> None:
    """The installed command, in a process of its own: a bad target is one line on stderr and exit status 2."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "spec.cli", "check", "no_such_module_xyz:build"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no_such_module_xyz" in proc.stderr, proc.stderr



def test_an_example_past_its_deadline_fails_the_claim_as_timed_out() -> None:
    """--timeout: a target that hangs gets a verdict: the claim fails as timed out, within a few deadlines."""
    import time as _time

    from spec.catalog import ordered
    from spec.runner import FAILED, Invocation, run_claim
    from spec.targets.reference_target import ReferenceTarget

    class Hangs(ReferenceTarget):
        def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            _time.sleep(30)
            return super().logits(ids, attention_mask)

    ordered()
    base = ReferenceTarget.from_preset("gpt2-tiny")
    started = _time.perf_counter()
    r = run_claim(CATALOG["GEN-4"], Hangs(base.model, name="hangs"), profile=settings(max_examples=3, database=None),
                  invocation=Invocation(target_spec="hangs", timeout=0.5, shrink_seconds=0))
    assert r.status == FAILED and r.detail.startswith("ExampleTimedOut: timed out"), r.detail
    assert "--timeout 0.5" in r.reproduce
    assert _time.perf_counter() - started < 25  # far below one 30 s hang: the deadline stopped it
    ok = run_claim(CATALOG["GEN-4"], base, profile=settings(max_examples=3, database=None),
                   invocation=Invocation(timeout=30))
    assert ok.status != FAILED, ok.detail


# -- beyond the list: classes the audit of issue #14 found --------------------------------------------------
def test_explain_and_figures_refuse_a_target_without_a_tokenizer(factories: str, tmp_path: Path) -> None:
    """Both start from text: a target without a tokenizer was a NotExposed traceback after the model loaded."""
    refused(["explain", "hi", "--target", "inputs_factories:logits_only"], "inputs_factories:logits_only",
            "no tokenizer")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    refused(["figures", str(out), "--only", "2-temperature", "--target", "inputs_factories:logits_only"],
            "logits-only", "no tokenizer")
    assert list(out.iterdir()) == []


def test_figures_name_the_capability_a_figure_needs(factories: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    refused(["figures", str(out), "--only", "4-residual-norms", "--target", "inputs_factories:text_only"],
            "4-residual-norms", "residual_states", "text-only")
    assert list(out.iterdir()) == []


class _Refusing(ReferenceTarget):
    """A tokenizer that refuses some text (as SmolLM2's does for a byte its vocabulary lacks)."""

    def tokenizer(self) -> object:  # type: ignore[override]
        class Tok:
            vocab_size = 97

            def encode(self, text: str) -> list[int]:
                raise ValueError("text needs the byte 0x80, which the vocabulary lacks")

        return Tok()


def test_explain_says_when_the_tokenizer_cannot_encode_the_prompt() -> None:
    from spec.explain import explain

    target = _Refusing(ReferenceTarget.from_preset("gpt2-tiny").model, name="refusing")
    with pytest.raises(InputError, match=r"^prompt: target refusing's tokenizer cannot encode it: .*0x80"):
        list(explain("hi", target=target))


@pytest.mark.parametrize(("kw", "words"), [
    ({"steps": "3"}, "steps '3'"), ({"steps": True}, "steps True"), ({"top": 0}, "top 0"),
    ({"temperature": float("nan")}, "temperature nan"), ({"temperature": "0.7"}, "temperature '0.7'"),
    ({"device": "tpu"}, "device"), ({"dtype": "float8"}, "dtype"),
])
def test_explain_api_checks_its_arguments_before_building(no_build: None, kw: dict[str, object], words: str) -> None:
    from spec.explain import explain

    with pytest.raises(InputError, match=re.escape(words)):
        list(explain("hi", target="builtin", **kw))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="prompt: expected a str, got bytes"):
        list(explain(b"hi", target="builtin"))  # type: ignore[arg-type]


def test_a_prompt_longer_than_the_context_is_refused_naming_the_limit() -> None:
    refused(["explain", "word " * 300, "--target", "builtin"], "602 tokens", "256 positions")


@pytest.mark.parametrize(("spec", "package"), [
    ("hf:gpt2", "transformers"), ("hf:llama", "transformers"), ("tlens:gpt2-tiny", "transformer_lens"),
    ("tlens:llama-tiny", "transformer_lens"), ("onnx:reference:llama-tiny", "onnxruntime"),
    ("llamacpp:smollm2", "llama_cpp"),
])
def test_targets_refuse_more_positions_than_their_context(spec: str, package: str) -> None:
    """Past its context a model failed deep inside (transformers: IndexError for learned positions; TransformerLens: a
    bare size mismatch) or computed on silently (transformers' rotary models; the ONNX graph gave finite logits for
    65 positions of a 64-position model; llama.cpp: 'RuntimeError: llama_decode returned 1'): each names the limit
    now."""
    from spec.cli import model_unavailable

    pytest.importorskip(package)
    try:
        t = registry.resolve(spec)
    except RuntimeError as err:
        if not model_unavailable(err):
            raise
        pytest.skip(f"SmolLM2 GGUF not available: {err}")
    n = t.max_positions
    ok, long = torch.zeros(1, n, dtype=torch.long), torch.zeros(1, n + 1, dtype=torch.long)
    assert t.logits(ok).shape[1] == n
    too_long = rf"target .*: {n + 1} positions asked for, but its context length is {n}; give at most {n} tokens"
    with pytest.raises(ValueError, match=too_long):
        t.logits(long)
    with pytest.raises(ValueError, match=too_long):
        t.decode(long, 1)
    if "generate" in t.capabilities:
        with pytest.raises(ValueError, match=too_long):
            t.generate(ok, 1)


def test_nothing_is_written_to_the_working_directory_for_an_empty_name(no_build: None, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    refused(["check", "reference", "--report", ""], "--report", "empty")
    refused(["figures", "", "--only", "1-toy-softmax"], "OUTDIR", "empty")
    assert list(tmp_path.iterdir()) == []


def test_budgets_given_to_the_api_are_checked_before_building(no_build: None) -> None:
    from spec.check import Check
    from spec.runner import Invocation

    for kw, words in (({"timeout": 1e300}, "--timeout"), ({"timeout": 0}, "--timeout"),
                      ({"shrink_seconds": float("nan")}, "--shrink-seconds"), ({"shrink_seconds": -1},
                                                                                 "--shrink-seconds")):
        with pytest.raises(InputError, match=words):
            Invocation(**kw)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=words):
            Check("reference", **kw)  # type: ignore[arg-type]
    assert Invocation(timeout=1e6, shrink_seconds=float("inf")).timeout == 1e6


@pytest.mark.parametrize("argv", [["check", "reference", "--claim", "EMB-2"], ["explain", "hi", "--target", "x:y"]])
def test_ctrl_c_while_a_model_loads_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "resolve", interrupted)
    code, _, err = run(argv)
    assert code == 130 and err == "next-token-spec: interrupted\n", err


def test_a_prompt_of_raw_bytes_on_the_command_line_is_refused_in_a_process() -> None:
    """The bytes a shell passes: not UTF-8, so Python's argv holds a lone surrogate; refused before a model loads."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "spec.cli", "explain", b"ab\xffc", "--target", "builtin"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count(b"\n") == 1 and b"the byte 0xff" in proc.stderr, proc.stderr


# the pytest plugin: a bad --target or option is a usage error at start-up, a target that cannot be built is one
# line per item and is tried once
def test_the_plugin_refuses_a_bad_target_or_option_at_start_up(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", notafolder="")
    for args, words in ((["--target", "nope"], "--target nope: unknown target 'nope'"),
                        (["--target", "a b:c"], "not a target name"),
                        (["--target", "reference", "--shrink-seconds", "nan"], "--shrink-seconds: must be a number"),
                        (["--target", "reference", "--shrink-seconds", "-1"], "--shrink-seconds: must be a number"),
                        (["--target", "reference", "--expectations", "notafolder.toml"], "is not a folder"),
                        (["--target", "reference", "--expectations", "gone"], "does not exist")):
        result = pytester.runpytest_inprocess(*args, "-p", "no:randomly", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (args, result.stderr.str())
        assert words in result.stderr.str(), (args, result.stderr.str())


def test_the_plugin_tries_a_target_that_cannot_be_built_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(inputs_plugin_factory="def build():\n    with open('calls.txt', 'a') as f:\n"
                                              "        f.write('1')\n    raise RuntimeError('no weights here')\n")
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess("--target", "inputs_plugin_factory:build", "-k", "EMB", "-p", "no:randomly",
                                          "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] >= 5 and "passed" not in outcomes, outcomes
    text = result.stdout.str()
    assert "Traceback" not in text
    assert "\ntarget inputs_plugin_factory:build: the factory raised RuntimeError: no weights here\n" in text
    assert (pytester.path / "calls.txt").read_text() == "1"  # built once, not once per claim


def test_an_expectations_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "latin1.toml"
    f.write_bytes(b'[[deviation]]\nclaim = "GEN-3"\nreason = "caf\xe9"\n')
    with pytest.raises(InputError, match=r"latin1\.toml is not UTF-8 text \(byte 43\)"):
        load(f, IDS)


def test_a_bad_profile_in_the_environment_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                      pytester: pytest.Pytester) -> None:
    """NEXT_TOKEN_SPEC_PROFILE=bogus was a ValueError traceback from check and an INTERNALERROR from pytest."""
    monkeypatch.setenv("NEXT_TOKEN_SPEC_PROFILE", "bogus")
    refused(["check", "reference", "--claim", "EMB-2"], "NEXT_TOKEN_SPEC_PROFILE", "ci, dev, thorough", "'bogus'")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "NEXT_TOKEN_SPEC_PROFILE must be one of ci, dev, thorough, got 'bogus'" in result.stderr.str()


@pytest.mark.parametrize("value", ["[" * 50_000 + "]" * 50_000, "{b = " * 5_000 + "1" + "}" * 5_000])
def test_toml_nested_too_deeply_is_an_input_error(tmp_path: Path, value: str) -> None:
    """Issue #14 audit: tomllib recurses per level, so a[[[[... (well under MAX_BYTES) was a RecursionError."""
    f = tmp_path / "deep.toml"
    f.write_text(f"a = {value}\n")
    with pytest.raises(InputError, match=r"deep\.toml nests arrays or tables too deeply"):
        load(f, IDS)


def test_figures_refuse_a_target_that_is_no_target_before_writing_any(no_build: None, tmp_path: Path) -> None:
    """Issue #14 audit: figures OUTDIR --target nope wrote the model-free figure 1, then refused the target."""
    refused(["figures", str(tmp_path / "out"), "--target", "nope"], "unknown target 'nope'")
    refused(["figures", str(tmp_path / "out"), "--target", "a b:c", "--only", "3-length"], "not a target name")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("temperature", ["1e-40", "1e-320"])
def test_explain_at_a_tiny_temperature_shows_the_limit_not_nan(temperature: str) -> None:
    """Issue #14 audit: explain divided the logits by T itself, so p(T=1e-40) was nan for every token (bug 2 of the
    issue, fixed in reference.sampling, was still in explain's own softmax)."""
    code, out, err = run(["explain", "The storm is", "--target", "builtin", "--temperature", temperature, "--top", "3"])
    assert code == 0, err
    rows = out.split("softmax:\n")[1].split("\n6.")[0].splitlines()[1:]
    assert "nan" not in out and [r.split()[-1] for r in rows] == ["1.0000", "0.0000", "0.0000"], out


def test_explain_refuses_nan_logits() -> None:
    from spec.explain import builtin_target, explain

    t = builtin_target()
    with torch.no_grad():
        t.model.blocks[0].mlp.W_out.fill_(float("nan"))  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"builtin \(random weights\): its logits at step 1 hold NaN or \+inf"):
        list(explain("The storm is", target=t))
