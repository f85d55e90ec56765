"""``next-token-spec explain``: one token's journey, told stage by stage as the documents tell it.

text -> token IDs -> embedding rows -> residual stream through every block ->
final norm -> logits -> softmax (at T = 1 and a chosen T) -> the chosen token.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from reference.sampling import softmax
from spec.errors import InputError
from spec.target import Target


def check_vocabulary(t: Target, ids: list[int]) -> None:
    """The model has a row for every token ID its tokenizer gave (else it would fail with an IndexError)."""
    if ids and max(ids) >= t.vocab_size:
        raise InputError(f"target {t.name}: its vocabulary has {t.vocab_size} entries but its tokenizer "
                         f"({t.tokenizer().vocab_size} entries) gave token ID {max(ids)}; use a target whose "
                         "model and tokenizer share one vocabulary (e.g. builtin or smollm2)")


def builtin_target(device: str = "cpu", dtype: str = "float32") -> Target:
    """A small random-weight GPT-2-style reference model whose vocabulary is the built-in tokenizer's."""
    import reference
    from spec.targets.reference_target import ReferenceTarget
    from spec.targets.registry import DTYPES
    from spec.targets.tokenizers import builtin_tokenizer

    tok = builtin_tokenizer()
    cfg = reference.preset("gpt2-tiny").with_(vocab_size=tok.vocab_size, max_positions=256)
    model = reference.build(cfg, seed=0, device=device, dtype=DTYPES[dtype])
    return ReferenceTarget(model, name="builtin (random weights)", tokenizer=tok)


DEFAULT_TARGET = "smollm2"  # the real trained model (issue #4); "builtin" needs no download


def explain(prompt: str, *, target: str | Target = DEFAULT_TARGET, device: str = "cpu", dtype: str = "float32",
            steps: int = 1, temperature: float = 0.7, top: int = 10) -> Iterator[str]:
    """Yield the lines of the story for ``steps`` greedy steps.

    The default target is SmolLM2-135M-Instruct, so the story is a trained model's; when its
    GGUF file cannot be located or fetched, spec.targets.smollm2.ModelUnavailable says how to
    provide it (or to pass target="builtin", a random-weight model that needs nothing).
    """
    from spec.targets.registry import check_device, check_dtype, resolve

    check_prompt(prompt)  # refused before a model is loaded
    if not _whole(steps) or not _whole(top) or not _real_at_least_0(temperature):
        raise InputError(f"explain: steps and top must be whole numbers >= 1 and temperature a finite number >= 0, "
                         f"got steps {steps!r}, temperature {temperature!r}, top {top!r}")
    if isinstance(target, Target):
        t = target
    elif target == "builtin":
        check_device(device)
        check_dtype(dtype)
        t = builtin_target(device, dtype)
    else:
        t = resolve(target, device=device, dtype=dtype)
    if "tokenizer" not in t.capabilities:
        named = target if isinstance(target, str) else t.name
        raise InputError(f"target {named}: exposes no tokenizer, and explain starts from text; use a target with "
                         "one (smollm2, smollm2:hf, builtin, or an adapter whose tokenizer() is implemented)")
    tok = t.tokenizer()
    try:
        ids = tok.encode(prompt)
    except ValueError as err:  # text the tokenizer cannot encode (e.g. a byte SmolLM2's vocabulary lacks)
        raise InputError(f"prompt: target {t.name}'s tokenizer cannot encode it: {err}") from None
    if not ids:
        raise InputError("prompt: the text encodes to no tokens; give at least one character")
    check_vocabulary(t, ids)
    if len(ids) + steps > t.max_positions:
        raise InputError(f"explain: the prompt's {len(ids)} tokens and {steps} steps exceed the model's "
                         f"{t.max_positions} positions; give a shorter prompt or fewer --steps")
    yield f"model: {t.describe()}"
    for step in range(steps):
        yield from _one_step(t, ids, temperature, top, step)
        ids = [*ids, _choose(t, ids)]


def check_prompt(prompt: object) -> None:
    """A prompt is a non-empty str with a UTF-8 encoding; InputError otherwise (before any model is loaded).

    A byte that is not UTF-8 on the command line reaches Python as a lone surrogate (os.fsdecode's
    surrogateescape), which no tokenizer can encode: named here with its position, not as a traceback later.
    """
    if not isinstance(prompt, str):
        raise InputError(f"prompt: expected a str, got {type(prompt).__name__}")
    if not prompt:
        raise InputError("prompt: empty; give at least one character")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = prompt[err.start]
        raw = f"the byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else repr(bad)
        raise InputError(f"prompt: character {err.start} is {raw}, which is not UTF-8 text (a lone surrogate); "
                         "give the prompt as UTF-8") from None


def check_finite(t: Target, logits: torch.Tensor, step: int) -> None:
    """No story from NaN or +inf logits (a broken weight, an overflow): InputError naming the target and step.

    -inf is allowed: a model may rule a token out. As reference.generate refuses the same, nothing shown is
    computed from a NaN.
    """
    if bool(torch.isnan(logits).any()) or bool((logits == float("inf")).any()):
        raise InputError(f"target {t.name}: its logits at step {step + 1} hold NaN or +inf; check its weights for "
                         f"NaN/inf (or use a wider dtype than {t.dtype} if they overflow)")


def _whole(value: object) -> bool:
    """A whole number >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _real_at_least_0(value: object) -> bool:
    """A finite real number >= 0 (not a bool, not a string)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0)


def _choose(t: Target, ids: list[int]) -> int:
    logits = t.logits(torch.tensor([ids], device=t.device))[0, -1]
    return int(logits.argmax())


def _one_step(t: Target, ids: list[int], temperature: float, top: int, step: int) -> Iterator[str]:
    tok = t.tokenizer()
    x = torch.tensor([ids], device=t.device)  # [1, seq]
    yield f"\n=== step {step + 1}: predicting token {len(ids) + 1} ==="
    yield "1. text -> token IDs (byte-level BPE; the leading space belongs to the token)"
    for i in ids:
        yield f"   {i:>6}  {tok.decode([i])!r}"
    caps = t.capabilities
    if "embedding_matrix" in caps:
        E = t.embedding_matrix()
        yield f"2. lookup: each ID selects one row of E [{E.shape[0]} x {E.shape[1]}]; row norms:"
        yield "   " + "  ".join(f"{float(E[i].float().norm()):.3f}" for i in ids)
    if "residual_states" in caps:
        states = t.residual_states(x)
        yield "3. the residual stream at the last position (norm after each block; 0 = after the lookup):"
        yield "   " + "  ".join(f"L{li}:{float(h[0, -1].float().norm()):.2f}" for li, h in enumerate(states))
    if "attention_weights" in caps:
        yield "4. where the last position attends most, per layer (head-averaged weight):"
        for li, w in enumerate(t.attention_weights(x)):
            avg = w[0, :, -1].float().mean(dim=0)  # [seq]
            j = int(avg.argmax())
            yield f"   layer {li}: position {j} {tok.decode([ids[j]])!r} ({float(avg[j]):.2f})"
    logits = t.logits(x)[0, -1].float()  # [V]
    check_finite(t, logits, step)
    p1 = torch.softmax(logits, dim=-1)
    pt = softmax(logits[None], temperature)[0]  # the reference's: T = 0 is one-hot, a tiny T its limit (not NaN)
    yield f"5. final norm, then one dot product per vocabulary entry -> {logits.shape[0]} logits; softmax:"
    yield f"   {'token':>18}  {'logit':>8}  {'p(T=1)':>8}  {f'p(T={temperature:g})':>9}"
    for i in torch.argsort(logits, descending=True, stable=True)[:top].tolist():
        yield f"   {tok.decode([i])!r:>18}  {float(logits[i]):8.3f}  {float(p1[i]):8.4f}  {float(pt[i]):9.4f}"
    choice = int(logits.argmax())
    yield f"6. greedy choice: {tok.decode([choice])!r} (ID {choice}); text so far: {tok.decode([*ids, choice])!r}"
