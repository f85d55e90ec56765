"""Run claims against a target and say, claim by claim, what holds.

Each claim becomes a Hypothesis test over ``st.data()``; the result records the
status, how many examples ran, the worst error relative to its tolerance and, on
failure, the counterexample as values (each draw by its label), how far it was
shrunk and a command that reproduces it.

Shrinking has a wall-clock budget per claim (``shrink_seconds``, default
DEFAULT_SHRINK_SECONDS). Hypothesis has no setting for that (its own limit is a fixed
five minutes), so the runner keeps the clock itself: from the first failure on, the
test body raises ShrinkBudgetSpent once the budget is spent. ShrinkBudgetSpent is a
KeyboardInterrupt: the one exception Hypothesis's engine documents as "stop now"
(it is never taken for a failing example, nor checked against earlier runs of the
same choices; it stops the run and propagates). The runner catches it and reports
the smallest failing example it recorded so far. A real KeyboardInterrupt (Ctrl-C)
is not caught: it leaves run_claim, and ``next-token-spec check`` reports the claims
that finished.

While a claim runs, every ``target.logits`` result is checked (check_logits): a tensor
of shape [B, T, V] with V the target's vocab_size, of a floating dtype, on the
target's device. A target that gets this wrong fails every claim that reads logits,
on the first example, with a message naming what it returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import os
import shlex
import signal
import textwrap
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable, UnsatisfiedAssumption
from hypothesis.reporting import with_reporter

from spec.catalog import Claim
from spec.errors import InputError
from spec.expectations import Deviation
from spec.strategies import REALISTIC, Realistic, realistic_prompts
from spec.target import NOTES, SKIPPED_PARTS, NotExposed, Target
from spec.tolerance import Recorder, recording, stop_recording

PASSED, FAILED = "passed", "failed"
NOT_EXPOSED, DEVIATION = "not exposed", "expected deviation"
# passed on what could run, with parts (or whole examples) the target cannot run skipped and named in the detail
PARTLY = "partly run"
# no example could be checked, though the target had every capability asked for: each drawn example was rejected by
# the claim's own assumptions (Hypothesis's Unsatisfiable). A failure to check is never a pass: it fails in CI.
INCONCLUSIVE = "inconclusive"
# a claim that shows the documents' mathematics on numbers (Claim.illustration) held; never a pass of an
# implementation, since the target's own computation did not produce what was checked
ILLUSTRATED = "illustrated"
HELD = (PASSED, PARTLY, ILLUSTRATED)  # the statuses of a claim that ran and held
FAILING = (FAILED, INCONCLUSIVE)  # the statuses that fail a run (exit 1, a failed pytest item, a red CI)
NEEDS_TRAINED, NO_CONVERTER = "needs a trained model", "no converter for this target"
# how far a failure's counterexample was shrunk (Result.shrink)
SHRUNK, CUT_SHORT, NOT_SHRUNK = "shrunk", "cut short", "not shrunk"
DEFAULT_SHRINK_SECONDS = 5.0
# the longest --timeout: the alarm timer overflows past ~9.2e9 s (OverflowError inside the first example, reported as a
# claim failure), and a deadline of days is no deadline; omit it instead
MAX_TIMEOUT = 1e6


@dataclass
class Result:
    claim: str
    statement: str
    target: str
    status: str
    examples: int = 0
    worst: float | None = None  # worst error / tolerance over all comparisons (<= 1 within)
    detail: str = ""
    counterexample: str = ""  # the failing example's draws, one "label: value" per draw (format_draws)
    reproduce: str = ""
    seconds: float = 0.0
    realistic: int = 0  # how many of the examples were explicit realistic ones (Target.realistic_examples)
    # what the target chose where the sources leave a choice open (spec.target.note): topic -> {choice: count}
    notes: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str = ""
    tolerance: str = ""
    draws: list[tuple[str, str]] = field(default_factory=list)  # the failing example: (label, formatted value)
    shrink: str = ""  # on failure: SHRUNK, CUT_SHORT (by the budget) or NOT_SHRUNK
    shrink_seconds: float | None = None  # the budget it ran under (None: unbounded)

    def notes_line(self) -> str:
        """The notes as one line, e.g. 'greedy tie: lowest ID (3), not the lowest ID (1)'."""
        return "; ".join(f"{topic}: " + ", ".join(f"{obs} ({n})" if len(seen) > 1 else obs
                                                  for obs, n in seen.items())
                         for topic, seen in self.notes.items())

    def shrink_line(self) -> str:
        """How far the counterexample below was shrunk, in words, for the failure report."""
        if self.shrink == CUT_SHORT:
            return (f"counterexample (shrinking cut short by the {self.shrink_seconds:g} s budget; the smallest "
                    "failing example found so far; --shrink-seconds to change):")
        if self.shrink == NOT_SHRUNK:
            return "counterexample (not shrunk):"
        return "counterexample (shrunk):"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Invocation:
    """The options a run was made with, so that the printed reproducer repeats every one that matters."""

    target_spec: str | None = None  # as given on the command line; None: the target's name
    profile: str = ""
    device: str | None = None  # None: the target's own
    dtype: str | None = None
    expectations: str | None = None  # an expectations file or folder given explicitly; None: the default
    no_expectations: bool = False
    seed: int | None = None  # a Hypothesis seed given explicitly
    shrink_seconds: float | None = DEFAULT_SHRINK_SECONDS  # None: shrink without a bound (the zoo)
    timeout: float | None = None  # each example's deadline in seconds (None: none; pytest's timeout plugins rule)

    def command(self, claim_id: str, target: Target) -> str:
        """The one-line ``next-token-spec check`` command that reruns one claim with these options."""
        device = self.device or torch.device(target.device).type
        dtype = self.dtype or str(target.dtype).removeprefix("torch.")
        words = ["next-token-spec", "check", self.target_spec or target.name, "--claim", claim_id,
                 "--device", device, "--dtype", dtype]
        if self.profile:
            words += ["--profile", self.profile]
        if self.no_expectations:
            words.append("--no-expectations")
        elif self.expectations:
            words += ["--expectations", str(self.expectations)]
        if self.seed is not None:
            words += ["--seed", str(self.seed)]
        words += ["--shrink-seconds", "inf" if self.shrink_seconds is None else f"{self.shrink_seconds:g}"]
        if self.timeout is not None:
            words += ["--timeout", f"{self.timeout:g}"]
        return shlex.join(words)

    def __post_init__(self) -> None:
        """The budgets are numbers the runner can keep: InputError naming the option otherwise (a NaN budget would
        never run out, a negative one would mean 0, a deadline past MAX_TIMEOUT overflows the timer)."""
        check_shrink_seconds(self.shrink_seconds)
        check_timeout(self.timeout)


def _real(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_shrink_seconds(value: float | None) -> None:
    """None (no bound) or a number of seconds >= 0 (inf: no bound); InputError naming --shrink-seconds otherwise."""
    x = _real(value)
    if value is not None and (x is None or not x >= 0):
        raise InputError(f"--shrink-seconds must be a number of seconds >= 0 (or inf), got {value!r}")


def check_timeout(value: float | None) -> None:
    """None (no deadline) or seconds in (0, MAX_TIMEOUT]; InputError naming --timeout otherwise."""
    x = _real(value)
    if value is not None and (x is None or not 0 < x <= MAX_TIMEOUT):
        raise InputError(f"--timeout must be a number of seconds > 0 and at most {MAX_TIMEOUT:.0f} (omit it for no "
                         f"deadline), got {value!r}")


@dataclass(frozen=True)
class Progress:
    """Where a running claim is: examples done of its budget, and whether it is shrinking a failure."""

    claim: str
    examples: int
    budget: int
    seconds: float
    shrinking: bool = False
    shrink_tries: int = 0


OnProgress = Callable[[Progress], None]


class ShrinkBudgetSpent(KeyboardInterrupt):
    """Raised from the test body once the shrink budget is spent, to stop Hypothesis's engine as an interrupt does.

    Another BaseException would also stop it, but only after Hypothesis compared the cut-short example with earlier
    runs of the same choices and raised FlakyStrategyDefinition instead; an interrupt skips that check. The runner
    catches it; it never leaves run_claim.
    """


class ExampleTimedOut(AssertionError):
    """An example ran past its deadline (``--timeout``): the claim fails as timed out, naming the deadline."""


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise ExampleTimedOut in this thread once ``seconds`` have passed (SIGALRM: main thread, POSIX only).

    A target that hangs must not hang the verdict. The alarm interrupts Python code and returns from blocking
    system calls; a target stuck inside one long C call is interrupted when that call returns.
    """
    if seconds is None or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ExampleTimedOut(f"timed out: the example ran longer than --timeout {seconds:g} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


class _Watch:
    """The clock and the record of one claim run: examples done, the last failing example's draws, the budget.

    The last failing example is the one to report: Hypothesis replays its final shrunk example last, and while it
    shrinks every failing example it runs is smaller than the ones before (it only tries simpler ones).
    """

    def __init__(self, claim: str, budget: int, shrink_seconds: float | None, progress: OnProgress | None,
                 timeout: float | None = None) -> None:
        self.claim, self.budget, self.shrink_seconds, self.progress = claim, budget, shrink_seconds, progress
        self.timeout = timeout
        self.started = time.perf_counter()
        self.examples = 0
        self.first_failure: float | None = None  # when the first example failed: the shrink clock starts there
        self.shrink_tries = 0
        self.draws: list[tuple[str, object]] = []
        self.error: BaseException | None = None
        self.assumed = 0  # examples rejected by the claim's own assumptions (assume / reject)
        self.unexposed = 0  # examples rejected because the target lacks what they need (NotExposed)

    def before_example(self) -> None:
        """Stop the run (ShrinkBudgetSpent) when shrinking has used up its budget."""
        if self.first_failure is None:
            return
        self.shrink_tries += 1
        if self.shrink_seconds is not None and time.perf_counter() - self.first_failure > self.shrink_seconds:
            raise ShrinkBudgetSpent()

    def passed(self) -> None:
        self.examples += 1
        self._report()

    def failed(self, draws: list[tuple[str, object]], error: BaseException) -> None:
        if self.first_failure is None:
            self.first_failure = time.perf_counter()
        self.draws, self.error = draws, error
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(Progress(self.claim, self.examples, self.budget, time.perf_counter() - self.started,
                                   self.first_failure is not None, self.shrink_tries))


class _RecordingData:
    """The DataObject handed to a claim: draws through Hypothesis's, and records (label, value) of each draw.

    Claims only call ``data.draw(strategy, label=...)``; the record is the counterexample as values, formatted at
    report time (format_draws), so a large tensor is summarised instead of printed by repr.
    """

    def __init__(self, data: st.DataObject) -> None:
        self._data = data
        self.draws: list[tuple[str, object]] = []

    def draw(self, strategy: st.SearchStrategy[Any], label: object = None) -> Any:
        value = self._data.draw(strategy, label=label)
        name = str(label) if label is not None else f"draw {len(self.draws) + 1}"
        self.draws.append((name, _snapshot(value)))  # a copy: a target that writes into its input cannot alter it
        return value


def _snapshot(value: object) -> object:
    """Tensors cloned (also inside lists and tuples); everything else as drawn."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_snapshot(v) for v in value) if isinstance(value, list) else tuple(
            _snapshot(v) for v in value)
    return value


def missing_status(claim: Claim, target: Target) -> tuple[str, str] | None:
    """Why the claim cannot run on this target, or None when it can."""
    missing = claim.missing(target)
    if not missing:
        return None
    if "trained" in missing:
        return NEEDS_TRAINED, "the claim is about trained weights; this target's are random"
    if "reference_model" in missing:
        return NO_CONVERTER, "REF-1 needs a converter from this target's weights to the reference"
    return NOT_EXPOSED, "missing capabilities: " + ", ".join(missing)


def run_claim(claim: Claim, target: Target, *, profile: settings | None = None,
              deviation: Deviation | None = None, target_spec: str | None = None,
              profile_name: str = "", invocation: Invocation | None = None,
              progress: OnProgress | None = None) -> Result:
    """Check one claim on one target; never raises for a claim failure.

    ``invocation`` carries the options of the run (the shrink budget among them) for the reproducer; without it,
    ``target_spec`` and ``profile_name`` fill one in with the defaults. ``progress`` is called after each example.
    """
    started = time.perf_counter()
    how = invocation or Invocation(target_spec=target_spec, profile=profile_name)
    result = Result(claim.id, claim.statement, target.describe(), PASSED, source=claim.source,
                    tolerance=claim.tolerance, shrink_seconds=how.shrink_seconds)
    why = missing_status(claim, target)
    if why is not None:
        result.status, result.detail = why
        return result
    base = profile or settings()
    n_max = examples_for(claim, target, base.max_examples)
    rec = Recorder()
    report: list[object] = []
    # an expected deviation's failure is already explained: skip shrinking it (hundreds of extra examples)
    shrinks = deviation is None and how.shrink_seconds != 0
    phases = tuple(p for p in base.phases if shrinks or p != Phase.shrink)
    watch = _Watch(claim.id, max(1, n_max), how.shrink_seconds if shrinks else None, progress, how.timeout)

    claim, count = _watched(claim, watch), [0]  # the same claim, timed and its draws recorded

    # Keep this function's code as it is: under a derandomized profile Hypothesis seeds the examples from a digest of
    # its source, so any change to it changes every example drawn (and the kill matrix). The clock and the record of
    # draws live in _watched instead.
    def body(data: st.DataObject) -> None:
        try:
            claim.check(target, data)
        except NotExposed as exc:  # this example needs what the target lacks (e.g. a config it cannot build)
            unexposed[exc.capability] = str(exc)
            reject()
        count[0] += 1

    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    # one counterexample per claim: shrinking starts from the first failure (no search for other bugs after it)
    test = given(data=st.data())(body)
    if how.seed is not None:
        test = hypothesis_seed(how.seed)(test)
    prop = settings(base, max_examples=max(1, n_max), deadline=None, phases=phases, suppress_health_check=slow_ok,
                    report_multiple_bugs=False, database=None if base.derandomize else base.database)(test)

    def explicit(real: Realistic) -> None:
        """One explicit realistic example: the claim with REALISTIC set, Hypothesis drawing only what is left."""
        one = settings(base, max_examples=1, derandomize=True, database=None, phases=(Phase.generate,),
                       deadline=None, suppress_health_check=slow_ok)
        reset = REALISTIC.set(real)
        try:
            one(given(data=st.data())(body))()
        except Unsatisfiable:  # the target cannot run this claim on real text: the drawn examples decide
            pass
        finally:
            REALISTIC.reset(reset)

    unexposed: dict[str, str] = {}
    unchecked = _checking_logits(target)
    token = recording(rec)
    parts = SKIPPED_PARTS.set(unexposed)  # parts of examples skipped by spec.target.skip_part
    noted = NOTES.set(result.notes)  # what the target chose where the sources leave it free (spec.target.note)
    try:
        with with_reporter(report.append):
            for i in range(_realistic_count(claim, target)):
                real = Realistic(i, _prompts(target))
                explicit(real)
                if not real.consulted:  # the claim draws no model input: its drawn examples are the whole story
                    break
                result.realistic += 1
            prop()
    except (NotExposed, Unsatisfiable) as exc:  # no example could run on this target
        reasons = "; ".join(unexposed.values()) or str(exc)
        if watch.assumed:  # the claim's own assumptions rejected what was drawn: nothing was checked
            result.status = INCONCLUSIVE
            result.detail = (f"no example could be checked: {watch.assumed} drawn example(s) were rejected by the "
                             "claim's assumptions" + (f", {watch.unexposed} needed what the target lacks "
                                                      f"({reasons})" if watch.unexposed else ""))
        else:
            status = NO_CONVERTER if set(unexposed) == {"reference_model"} else NOT_EXPOSED
            result.status, result.detail = status, f"missing capability: {reasons}"
    except ShrinkBudgetSpent:  # a failure whose shrinking ran out of time: the smallest example found so far
        _failed(result, watch, watch.error, report, CUT_SHORT)
    except Exception as exc:  # a failed claim: keep the shrunk example and the message
        _failed(result, watch, exc, report, SHRUNK if Phase.shrink in phases else NOT_SHRUNK)
    finally:
        stop_recording(token)
        SKIPPED_PARTS.reset(parts)
        NOTES.reset(noted)
        unchecked()
    if result.status in FAILING:
        result.reproduce = how.command(claim.id, target)
    result.examples = count[0]
    result.worst = rec.worst if rec.comparisons else None
    if result.status == PASSED and unexposed:  # passed on the examples it could run: say which it could not
        result.status = PARTLY
        result.detail = "what the target cannot run was skipped: " + "; ".join(unexposed.values())
    if result.status == PASSED and claim.illustration:
        result.status = ILLUSTRATED
        result.detail = "executable documentation: held on this target's numbers, not a check of its computation"
    if deviation is not None:
        if result.status in FAILING:
            result.status, result.detail = DEVIATION, f"{deviation.reason} | {result.detail}"
        elif result.status in HELD:  # a stale entry would hide a future failure: fail until it is removed
            result.status = FAILED
            result.detail = (f"listed as an expected deviation, but the claim passed: remove the entry "
                             f"({deviation.reason})")
            result.reproduce = how.command(claim.id, target)
    result.seconds = time.perf_counter() - started
    return result


def check_logits(target: Target, ids: object, out: object) -> None:
    """AssertionError unless ``out`` is what ``target.logits(ids)`` must return: [B, T, V] (V = the target's
    vocab_size), a floating dtype, on the target's device."""
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"target.logits returned {type(out).__name__}; expected a tensor [B, T, V]")
    vocab = getattr(target, "vocab_size", None)
    if isinstance(ids, torch.Tensor) and isinstance(vocab, int):
        want = [*ids.shape, vocab]
        if list(out.shape) != want:
            raise AssertionError(f"target.logits returned shape {list(out.shape)}; expected [B, T, V] = {want} "
                                 f"(ids {list(ids.shape)}, the target's vocab_size {vocab})")
    if not out.is_floating_point():
        raise AssertionError(f"target.logits returned dtype {str(out.dtype).removeprefix('torch.')}; expected a "
                             "floating-point dtype")
    want_device, got_device = torch.device(target.device), out.device
    if got_device.type != want_device.type or (want_device.index is not None
                                               and got_device.index not in (None, want_device.index)):
        raise AssertionError(f"target.logits returned a tensor on {got_device}; expected the target's device "
                             f"{want_device}")


def _checking_logits(target: Target) -> Callable[[], None]:
    """Make ``target.logits`` check its result (check_logits) while a claim runs; returns the undo.

    The check is set on the instance, over the class's method: the target's type, hence its capabilities, is
    unchanged. A target that takes no instance attributes (``__slots__``) runs unchecked.
    """
    try:
        own = vars(target)
    except TypeError:
        return lambda: None
    had, before = "logits" in own, own.get("logits")
    original = target.logits

    def logits(ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = original(ids, *args, **kwargs)
        check_logits(target, ids, out)
        return out

    logits.__doc__ = original.__doc__
    own["logits"] = logits

    def undo() -> None:
        if had:
            own["logits"] = before
        else:
            own.pop("logits", None)

    return undo


def _watched(claim: Claim, watch: _Watch) -> Claim:
    """The same claim, run under the watch: stopped once the shrink budget is spent, its draws recorded, each
    example's outcome reported (a rejected or unexposed example is neither passed nor failed)."""
    def check(target: Target, data: st.DataObject) -> None:
        watch.before_example()
        recorded = _RecordingData(data)
        try:
            with _deadline(watch.timeout):
                claim.check(target, cast(st.DataObject, recorded))
        except NotExposed:
            watch.unexposed += 1
            raise
        except UnsatisfiedAssumption:
            watch.assumed += 1
            raise
        except Exception as exc:
            watch.failed(recorded.draws, exc)
            raise
        watch.passed()

    check.__doc__ = claim.check.__doc__
    return dataclasses.replace(claim, check=check)


def _failed(result: Result, watch: _Watch, error: BaseException | None, report: list[object], shrink: str) -> None:
    """Fill in a failure: the error's message, the failing example's draws as values, how far it was shrunk."""
    result.status, result.shrink = FAILED, shrink
    result.detail = _first_lines(f"{type(error).__name__}: {error}", 12) if error is not None else "failed"
    result.draws = [(label, format_value(value)) for label, value in watch.draws]
    if result.draws:
        result.counterexample = format_draws(result.draws)
    else:  # the failure came before any draw (or outside the claim): what Hypothesis said, else where it happened
        said = "\n".join(str(r) for r in report).strip()
        result.counterexample = said or "(no drawn values)\n" + _first_lines(traceback.format_exc(), 20)


# -- the counterexample as values ---------------------------------------------------------------------------
SMALL_TENSOR = 64  # tensors with at most this many elements are printed in full
FIRST_ENTRIES = 8  # how many leading entries a large tensor shows


def format_draws(draws: list[tuple[str, str]]) -> str:
    """One line per draw, ``label: value``; a value of several lines is indented under its label."""
    return "\n".join(f"  {label}: " + value.replace("\n", "\n" + " " * (len(label) + 4)) for label, value in draws)


def format_value(value: object) -> str:
    """A drawn value for a person: tensors by shape, dtype and entries (all of a small one), dataclasses such as
    ModelConfig with every field, lists and tuples item by item, anything else by repr."""
    if isinstance(value, torch.Tensor):
        return _format_tensor(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _format_dataclass(value)
    if isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value):
        inner = ",\n ".join(format_value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


def _format_tensor(t: torch.Tensor) -> str:
    t = t.detach().cpu()
    head = f"tensor {list(t.shape)} {str(t.dtype).removeprefix('torch.')}"
    if t.numel() <= SMALL_TENSOR:
        return f"{head} {_nested(t.tolist())}"
    flat = t.flatten()
    first = ", ".join(_number(x) for x in flat[:FIRST_ENTRIES].tolist())
    if t.is_floating_point() or t.is_complex():
        real = flat.double() if t.is_floating_point() else flat.abs().double()
        finite = real[torch.isfinite(real)]
        nonfinite = real.numel() - finite.numel()
        stats = (f"min {_number(float(finite.min()))}, max {_number(float(finite.max()))}, "
                 f"mean {_number(float(finite.mean()))}" if finite.numel() else "no finite entry")
        stats += f", {nonfinite} non-finite" if nonfinite else ""
    else:
        stats = f"min {_number(flat.min().item())}, max {_number(flat.max().item())}"
    return f"{head}: first entries [{first}, …]; {stats}"


def _nested(x: object) -> str:
    if isinstance(x, list):
        return "[" + ", ".join(_nested(v) for v in x) + "]"
    return _number(x)


def _number(x: object) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.7g}"
    return str(x)


def _format_dataclass(value: Any) -> str:
    """Every field (no cut), wrapped at 100 characters."""
    items = [f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value)]
    text = f"{type(value).__name__}(" + ", ".join(items) + ")"
    return "\n".join(textwrap.wrap(text, width=100, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False))


def examples_for(claim: Claim, target: Target, profile_max: int) -> int:
    """The example budget: the profile's, capped by the claim's own and by the target's (Target.max_examples).

    The target's cap scales an expensive target down without touching what the claims do on
    every other target. It applies only to claims that run the model: not to claims about
    trained weights, whose counts are already chosen for a real model, nor to claims that
    only use the tokenizer or the sampler (cheap at any model size).
    """
    n = profile_max if claim.max_examples is None else min(claim.max_examples, profile_max)
    cap = getattr(target, "max_examples", None)
    model_free = bool(claim.needs) and set(claim.needs) <= _MODEL_FREE
    if cap is not None and "trained" not in claim.needs and not model_free:
        n = min(n, cap)
    return max(1, n)


def _realistic_count(claim: Claim, target: Target) -> int:
    """How many explicit realistic examples run first: the target's, for claims that run its model on its input
    and for the sampler claims, which then sample its own logits after a real prompt at temperature, top-k and top-p
    away from the edges (claims about trained weights already use real text; the other model-free claims are
    cheap at any size)."""
    n = getattr(target, "realistic_examples", 0)
    model_free = bool(claim.needs) and set(claim.needs) <= _MODEL_FREE and not set(claim.needs) & _SAMPLER
    if not n or "trained" in claim.needs or model_free:
        return 0
    return n if "tokenizer" in target.capabilities else 0


_PROMPTS: weakref.WeakKeyDictionary[Target, list[list[int]]] = weakref.WeakKeyDictionary()


def _prompts(target: Target) -> list[list[int]]:
    """spec.strategies.REAL_PROMPTS in the target's tokenizer, encoded once per target."""
    if target not in _PROMPTS:
        _PROMPTS[target] = realistic_prompts(target)
    return _PROMPTS[target]


# capabilities that never run the model's forward pass
_MODEL_FREE = frozenset({"tokenizer", "softmax", "filtered_probabilities", "sample"})
_SAMPLER = frozenset({"filtered_probabilities", "sample"})  # model-free, yet given real logits when realistic


def run_catalog(claims: list[Claim], target: Target, *, profile: settings | None = None,
                deviations: dict[str, Deviation] | None = None, target_spec: str | None = None,
                profile_name: str = "", invocation: Invocation | None = None, progress: OnProgress | None = None,
                on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run every claim on ``target`` in catalog order; ``on_result`` sees each result as soon as it is known."""
    devs = deviations or {}
    how = invocation or Invocation(target_spec=target_spec, profile=profile_name)
    results = []
    for c in claims:
        results.append(run_claim(c, target, profile=profile, deviation=devs.get(c.id), invocation=how,
                                 progress=progress))
        if on_result is not None:
            on_result(results[-1])
    return results


def require_trained() -> bool:
    """In CI a missing trained model is a failure, not a skip (NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1)."""
    return os.environ.get("NEXT_TOKEN_SPEC_REQUIRE_TRAINED", "") not in ("", "0")


def _first_lines(text: str, n: int) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:n]) + ("\n…" if len(lines) > n else "")
