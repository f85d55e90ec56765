"""Run claims against a target and say, claim by claim, what holds.

Each claim becomes a Hypothesis test over ``st.data()``; the result records the
status, how many examples ran, the worst error relative to its tolerance and, on
failure, Hypothesis's shrunk counterexample and a command that reproduces it.
"""

from __future__ import annotations

import os
import time
import traceback
import weakref
from dataclasses import asdict, dataclass, field

from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.reporting import with_reporter

from spec.catalog import Claim
from spec.expectations import Deviation
from spec.strategies import REALISTIC, Realistic, realistic_prompts
from spec.target import NOTES, SKIPPED_PARTS, NotExposed, Target
from spec.tolerance import Recorder, recording, stop_recording

PASSED, FAILED = "passed", "failed"
NOT_EXPOSED, DEVIATION = "not exposed", "expected deviation"
NEEDS_TRAINED, NO_CONVERTER = "needs a trained model", "no converter for this target"


@dataclass
class Result:
    claim: str
    statement: str
    target: str
    status: str
    examples: int = 0
    worst: float | None = None  # worst error / tolerance over all comparisons (<= 1 within)
    detail: str = ""
    counterexample: str = ""
    reproduce: str = ""
    seconds: float = 0.0
    realistic: int = 0  # how many of the examples were explicit realistic ones (Target.realistic_examples)
    # what the target chose where the sources leave a choice open (spec.target.note): topic -> {choice: count}
    notes: dict[str, dict[str, int]] = field(default_factory=dict)

    def notes_line(self) -> str:
        """The notes as one line, e.g. 'greedy tie: lowest ID (3), not the lowest ID (1)'."""
        return "; ".join(f"{topic}: " + ", ".join(f"{obs} ({n})" if len(seen) > 1 else obs
                                                  for obs, n in seen.items())
                         for topic, seen in self.notes.items())

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
              profile_name: str = "") -> Result:
    """Check one claim on one target; never raises for a claim failure."""
    started = time.perf_counter()
    result = Result(claim.id, claim.statement, target.describe(), PASSED)
    why = missing_status(claim, target)
    if why is not None:
        result.status, result.detail = why
        return result
    base = profile or settings()
    n_max = examples_for(claim, target, base.max_examples)
    rec, count = Recorder(), [0]
    report: list[object] = []

    # an expected deviation's failure is already explained: skip shrinking it (hundreds of extra examples)
    phases = base.phases if deviation is None else tuple(p for p in base.phases if p != Phase.shrink)

    def body(data: st.DataObject) -> None:
        try:
            claim.check(target, data)
        except NotExposed as exc:  # this example needs what the target lacks (e.g. a config it cannot build)
            unexposed[exc.capability] = str(exc)
            reject()
        count[0] += 1

    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    prop = settings(base, max_examples=max(1, n_max), deadline=None, phases=phases, suppress_health_check=slow_ok,
                    database=None if base.derandomize else base.database)(given(data=st.data())(body))

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
        status = NO_CONVERTER if set(unexposed) == {"reference_model"} else NOT_EXPOSED
        result.status, result.detail = status, f"missing capability: {reasons}"
    except Exception as exc:  # a failed claim: keep the shrunk example and the message
        result.status = FAILED
        result.detail = _first_lines(f"{type(exc).__name__}: {exc}", 12)
        result.counterexample = "\n".join(str(r) for r in report).strip() or _first_lines(traceback.format_exc(), 20)
        result.reproduce = _reproduce(claim, target, target_spec, profile_name)
    finally:
        stop_recording(token)
        SKIPPED_PARTS.reset(parts)
        NOTES.reset(noted)
    result.examples = count[0]
    result.worst = rec.worst if rec.comparisons else None
    if result.status == PASSED and unexposed:  # passed on the examples it could run: say which it could not
        result.detail = "what the target cannot run was skipped: " + "; ".join(unexposed.values())
    if deviation is not None:
        if result.status == FAILED:
            result.status, result.detail = DEVIATION, f"{deviation.reason} | {result.detail}"
        elif result.status == PASSED:  # a stale entry would hide a future failure: fail until it is removed
            result.status = FAILED
            result.detail = (f"listed as an expected deviation, but the claim passed: remove the entry "
                             f"({deviation.reason})")
            result.reproduce = _reproduce(claim, target, target_spec, profile_name)
    result.seconds = time.perf_counter() - started
    return result


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
    (claims about trained weights already use real text; model-free claims are cheap at any size)."""
    n = getattr(target, "realistic_examples", 0)
    if not n or "trained" in claim.needs or (claim.needs and set(claim.needs) <= _MODEL_FREE):
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


def run_catalog(claims: list[Claim], target: Target, *, profile: settings | None = None,
                deviations: dict[str, Deviation] | None = None, target_spec: str | None = None,
                profile_name: str = "") -> list[Result]:
    """Run every claim on ``target`` in catalog order."""
    devs = deviations or {}
    return [run_claim(c, target, profile=profile, deviation=devs.get(c.id), target_spec=target_spec,
                      profile_name=profile_name) for c in claims]


def _reproduce(claim: Claim, target: Target, target_spec: str | None, profile_name: str) -> str:
    """The one-line command that reruns this claim on this target."""
    return (f"next-token-spec check {target_spec or target.name} --claim {claim.id}"
            + (f" --profile {profile_name}" if profile_name else ""))


def require_trained() -> bool:
    """In CI a missing trained model is a failure, not a skip (NEXT_TOKEN_SPEC_REQUIRE_TRAINED=1)."""
    return os.environ.get("NEXT_TOKEN_SPEC_REQUIRE_TRAINED", "") not in ("", "0")


def _first_lines(text: str, n: int) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:n]) + ("\n…" if len(lines) > n else "")
