"""The ``next-token-spec`` command: list the catalog, check a target, explain a prediction.

    next-token-spec list [--markdown]
    next-token-spec check TARGET [--device D] [--dtype T] [--profile P] [--report FILE] [--claim ID ...]
                         [--expectations PATH | --no-expectations] [--shrink-seconds S] [--seed N] [--quiet]
    next-token-spec explain "PROMPT" [--target smollm2|builtin|T] [--steps N] [--temperature T]
    next-token-spec figures OUTDIR [--target T] [--only STEM ...]
    next-token-spec zoo [--markdown] [--mutant NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from spec import profiles

if TYPE_CHECKING:
    from spec.runner import Progress, Result

TARGET_HELP = ("reference[:preset], hf:<preset>, smollm2, smollm2:hf, tlens:<preset>, tlens:smollm2, "
               "llamacpp:smollm2, mutant:<name>, or module.path:factory")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit status (a reader closing the pipe early, as `| head` does, is not an error)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        sys.stdout = None  # type: ignore[assignment]  # nothing more can be written; skip the flush at exit
        return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="next-token-spec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="print the claim catalog")
    p_list.add_argument("--markdown", action="store_true", help="print docs/claims.md")

    p_check = sub.add_parser("check", help="run the catalog against a target")
    p_check.add_argument("target", help=TARGET_HELP)
    _device_dtype(p_check)
    p_check.add_argument("--profile", choices=profiles.PROFILES, default=None, help="Hypothesis profile")
    p_check.add_argument("--report", default=None, help="write a report: .json, .md or .xml (JUnit)")
    p_check.add_argument("--claim", action="append", default=[], help="only these claim IDs (repeatable)")
    p_check.add_argument("--expectations", default=None,
                         help="a TOML file of expected deviations, or a folder of <target>.toml (default: the "
                              "built-in targets' committed deviations, spec/targets/expectations/, as pytest uses)")
    p_check.add_argument("--no-expectations", action="store_true",
                         help="expect no deviation: every listed deviation is reported as the failure it is")
    p_check.add_argument("--shrink-seconds", type=_seconds, default=None, metavar="S",
                         help="wall-clock budget for shrinking each failing claim's counterexample (default 5; 0: "
                              "do not shrink; inf: no bound); past it the smallest example found so far is shown")
    p_check.add_argument("--seed", type=int, default=None, help="Hypothesis seed (for the non-derandomized profiles)")
    p_check.add_argument("--quiet", action="store_true",
                         help="print only the table, notes and failures (no line per claim, no progress)")

    p_explain = sub.add_parser("explain", help="follow one prediction through the model, stage by stage")
    p_explain.add_argument("prompt")
    p_explain.add_argument("--target", default="smollm2",
                           help="a target with a tokenizer (default: smollm2, the trained SmolLM2-135M-Instruct; "
                                "builtin: a random-weight model that needs no download)")
    _device_dtype(p_explain)
    p_explain.add_argument("--steps", type=int, default=1, help="repeat for N generated tokens")
    p_explain.add_argument("--temperature", type=float, default=0.7, help="also show probabilities at this T")
    p_explain.add_argument("--top", type=int, default=10, help="how many next-token candidates to show")

    p_figures = sub.add_parser("figures", help="draw the figures of docs/figures.md (PNG and SVG) into OUTDIR")
    p_figures.add_argument("outdir")
    p_figures.add_argument("--target", default="smollm2", help="the trained model figures 2-7 read (default smollm2)")
    _device_dtype(p_figures)
    p_figures.add_argument("--only", action="append", default=[], help="only this figure, by file stem (repeatable)")

    p_zoo = sub.add_parser("zoo", help="run the catalog against every mutant of the zoo (issue #5's kill matrix)")
    p_zoo.add_argument("--markdown", action="store_true", help="print docs/kill-matrix.md")
    p_zoo.add_argument("--mutant", action="append", default=[], help="only this mutant (repeatable)")

    args = parser.parse_args(argv)
    if args.command == "zoo":
        return _zoo(args)
    if args.command == "list":
        return _list(args.markdown)
    if args.command == "check":
        return _check(args)
    if args.command == "figures":
        return _figures(args)
    return _explain(args)


def _seconds(text: str) -> float:
    """A shrink budget: a number of seconds >= 0, or inf."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (or inf), got {text!r}")
    return value


def _device_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"))


def _list(as_markdown: bool) -> int:
    from spec.catalog import ordered
    from spec.report import catalog_markdown

    claims = ordered()
    if as_markdown:
        sys.stdout.write(catalog_markdown(claims))
        return 0
    for c in claims:
        print(f"{c.id:8} {c.statement}\n         source: {c.source}\n         needs: {', '.join(c.needs) or 'logits'}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from hypothesis import settings

    from spec import report
    from spec.catalog import CATALOG, ordered
    from spec.expectations import BUILTIN, for_target
    from spec.runner import DEFAULT_SHRINK_SECONDS, FAILED, Invocation, run_catalog
    from spec.targets.registry import resolve

    profile = profiles.load(args.profile)
    claims = ordered()
    if args.claim:
        unknown = [c for c in args.claim if c not in CATALOG]
        if unknown:
            print(f"unknown claim IDs: {unknown}", file=sys.stderr)
            return 2
        claims = [c for c in claims if c.id in args.claim]
    if args.no_expectations and args.expectations:
        print("--expectations and --no-expectations contradict each other; give one", file=sys.stderr)
        return 2
    target = resolve(args.target, device=args.device, dtype=args.dtype)
    folder = None if args.no_expectations else (args.expectations or BUILTIN)
    deviations = for_target(folder, args.target, set(CATALOG)) if folder else {}
    shrink = DEFAULT_SHRINK_SECONDS if args.shrink_seconds is None else args.shrink_seconds
    how = Invocation(target_spec=args.target, profile=profile, device=args.device, dtype=args.dtype,
                     expectations=args.expectations, no_expectations=args.no_expectations, seed=args.seed,
                     shrink_seconds=shrink)
    stream = None if args.quiet else Stream(sys.stdout)
    if stream is not None:
        print(f"target {target.describe()} on {args.device} ({args.dtype}), profile {profile}, "
              f"{len(claims)} claims, shrinking up to {shrink:g} s per failure", flush=True)
    results = run_catalog(claims, target, profile=settings.get_profile(profile), deviations=deviations,
                          invocation=how, progress=stream.progress if stream else None,
                          on_result=stream.done if stream else None)
    print(("\n" if stream else "") + report.table(results))
    if report.notes(results):
        print("\n" + report.notes(results))
    print("\n" + report.summary(results))
    fails = report.failures(results)
    if fails:
        print("\n" + fails)
    if args.report:
        report.write(args.report, results, suite=args.target)
    return 1 if any(r.status == FAILED for r in results) else 0


class Stream:
    """``check``'s running account: one line per claim as it finishes, and a progress indicator while one runs.

    On a terminal the indicator is one line rewritten in place (carriage return) at most every 0.2 s; into a pipe or
    a file it is a whole line every ``every`` seconds of a long claim, so a log shows that the run is alive without
    filling up. Each write is flushed.
    """

    def __init__(self, out: TextIO, every: float = 10.0) -> None:
        self.out, self.every = out, every
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.last = 0.0  # when the indicator was last written
        self.shown = False  # an indicator line is on the terminal, to be cleared

    def progress(self, p: Progress) -> None:
        """The indicator: examples done of the budget, or shrinking a failure, and the seconds so far."""
        now = time.monotonic()
        if self.tty:
            if now - self.last >= 0.2:
                self._write("\r\033[K" + _progress_text(p))
                self.last, self.shown = now, True
        elif p.seconds >= self.every and now - self.last >= self.every:
            self._write(f"  ... {_progress_text(p)}\n")
            self.last = now

    def done(self, r: Result) -> None:
        """The claim's line: ID, status, examples, seconds (and the worst error / tolerance when measured)."""
        worst = "" if r.worst is None else f", worst {r.worst:.2g}"
        clear = "\r\033[K" if self.shown else ""
        self._write(f"{clear}{r.claim:8} {r.status:20} {r.examples:4} examples {r.seconds:7.1f} s{worst}\n")
        self.shown, self.last = False, 0.0

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _progress_text(p: Progress) -> str:
    if p.shrinking:
        return f"{p.claim}: failed; shrinking ({p.shrink_tries} tries), {p.seconds:.0f} s"
    return f"{p.claim}: {p.examples}/{p.budget} examples, {p.seconds:.0f} s"


def _explain(args: argparse.Namespace) -> int:
    from spec.explain import explain
    from spec.targets.smollm2 import ModelUnavailable

    if args.steps < 1:
        print("--steps must be >= 1", file=sys.stderr)
        return 2
    try:
        for line in explain(args.prompt, target=args.target, device=args.device, dtype=args.dtype,
                            steps=args.steps, temperature=args.temperature, top=args.top):
            print(line)
    except ModelUnavailable as err:
        print(f"--target {args.target}: the SmolLM2 model is not available. {err}\n"
              "Or pass --target builtin for a random-weight model that needs no download.", file=sys.stderr)
        return 2
    return 0


def _figures(args: argparse.Namespace) -> int:
    """Write each figure of spec.figures as PNG and SVG; the model is loaded only if a chosen figure needs it."""
    import time

    try:
        import matplotlib  # noqa: F401  (a dev extra, imported lazily by spec.figures)
    except ImportError as err:
        print(f"figures need matplotlib (pip install matplotlib): {err}", file=sys.stderr)
        return 2
    from spec import figures
    from spec.targets.registry import resolve

    unknown = sorted(set(args.only) - {f.stem for f in figures.FIGURES})
    if unknown:
        print(f"unknown figures {unknown}; choose from {[f.stem for f in figures.FIGURES]}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    written = figures.write(args.outdir, lambda: resolve(args.target, device=args.device, dtype=args.dtype),
                            only=args.only)
    for stem, (_, paths) in written.items():
        print(f"{stem}: {', '.join(str(p) for p in paths)}")
    print(f"{len(written)} figures in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _zoo(args: argparse.Namespace) -> int:
    """Run the zoo; print the kill matrix (Markdown) or one line per mutant. Exit 1 if a mutant survives."""
    import time

    import torch

    from spec import zoo
    from spec.targets.mutants import MUTANTS

    unknown = sorted(set(args.mutant) - set(MUTANTS))
    if unknown:
        print(f"unknown mutants {unknown}; choose from {sorted(MUTANTS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as in the tests, so every reduction runs in the same order and the matrix repeats
    start = time.perf_counter()
    runs = []
    for name in args.mutant or list(MUTANTS):
        runs.append(zoo.run_mutant(name))
        if not args.markdown:
            kills = ", ".join(f"{k.claim} ({k.examples}/{k.size})" for k in runs[-1].kills) or "SURVIVED"
            print(f"{name:28} {kills}", flush=True)
    if args.markdown:
        sys.stdout.write(zoo.markdown(runs))
    print(f"zoo: {sum(bool(r.kills) for r in runs)} of {len(runs)} mutants killed in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0 if all(r.kills and not r.crashes for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
