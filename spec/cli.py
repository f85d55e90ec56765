"""The ``next-token-spec`` command: list the catalog, check a target, explain a prediction.

    next-token-spec list [--markdown]
    next-token-spec check TARGET [--device D] [--dtype T] [--profile P] [--report FILE] [--claim ID ...]
                         [--expectations PATH | --no-expectations] [--shrink-seconds S] [--seed N] [--timeout S]
                         [--quiet] [-j N]
    next-token-spec explain "PROMPT" [--target smollm2|builtin|T] [--steps N] [--temperature T]
    next-token-spec figures OUTDIR [--target T] [--only STEM ...]
    next-token-spec zoo [--markdown] [--mutant NAME ...]

Exit status: 0 all good, 1 a claim failed (or a mutant survived), 2 a usage or input error (one line on stderr
saying what was wrong and what is allowed; every option is checked before any work), 130 interrupted (Ctrl-C:
``check`` first prints the claims that finished and writes the report of them).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from spec import profiles
from spec.errors import InputError

if TYPE_CHECKING:
    from spec.runner import Progress, Result

USAGE, INTERRUPTED = 2, 130  # exit statuses: a bad input; Ctrl-C (128 + SIGINT, as a shell reports it)
MAX_STEPS = 1000  # explain --steps: each step prints a screenful; more is a typo, not a wish
REPORT_SUFFIXES = (".json", ".md", ".xml")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is an InputError (one line, exit 2) instead of the usage text and SystemExit."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message} (see {self.prog} -h)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit status (a reader closing the pipe early, as `| head` does, is not an error).

    A bad input (spec.errors.InputError, or a model that cannot be found) is one line on stderr and status 2; Ctrl-C
    is status 130 (``check`` first shows and writes the claims that finished).
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while a model loads, or in explain, figures or zoo: no traceback
        print("next-token-spec: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        sys.stdout = None  # type: ignore[assignment]  # nothing more can be written; skip the flush at exit
        return 0
    except InputError as err:
        return _refuse(str(err))
    except RuntimeError as err:
        if model_unavailable(err):  # check and figures (explain adds its random-weight alternative)
            return _refuse(str(err))
        raise


def model_unavailable(err: BaseException) -> bool:
    """Whether ``err`` is spec.targets.smollm2.ModelUnavailable (if that module was never imported, it is not)."""
    module = sys.modules.get("spec.targets.smollm2")
    kind = getattr(module, "ModelUnavailable", None)
    return kind is not None and isinstance(err, kind)


def _refuse(message: str) -> int:
    """Print one line, ``next-token-spec: error: <message>``, on stderr; the usage-error status."""
    line = " ".join(message.split())  # one line, however the message was wrapped
    print(f"next-token-spec: error: {line}", file=sys.stderr)
    return USAGE


def _main(argv: Sequence[str] | None) -> int:
    parser = _Parser(prog="next-token-spec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="print the claim catalog")
    p_list.add_argument("--markdown", action="store_true", help="print docs/claims.md")

    from spec.targets import registry  # the kinds of target, listed in the help as the errors list them

    p_check = sub.add_parser("check", help="run the catalog against a target",
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog=f"targets:\n{registry.kinds_help()}")
    p_check.add_argument("target", help=registry.forms_text())
    _device_dtype(p_check)
    p_check.add_argument("--profile", choices=profiles.PROFILES, default=None, help="Hypothesis profile")
    p_check.add_argument("--report", default=None, help="write a report: .json, .md or .xml (JUnit)")
    p_check.add_argument("--claim", action="append", default=[], help="only these claim IDs (repeatable)")
    p_check.add_argument("--expectations", default=None,
                         help="a TOML file of expected deviations, or a folder of <target>.toml (default: the "
                              "built-in targets' committed deviations, spec/targets/expectations/, as pytest uses)")
    p_check.add_argument("--no-expectations", action="store_true",
                         help="expect no deviation: every listed deviation is reported as the failure it is")
    p_check.add_argument("--shrink-seconds", type=shrink_seconds_option, default=None, metavar="S",
                         help="wall-clock budget for shrinking each failing claim's counterexample (default 5; 0: "
                              "do not shrink; inf: no bound); past it the smallest example found so far is shown")
    p_check.add_argument("--seed", type=int, default=None, help="Hypothesis seed (for the non-derandomized profiles)")
    p_check.add_argument("--timeout", type=_deadline_seconds, default=None, metavar="S",
                         help="fail a claim as timed out when one example runs longer than S seconds (0 < S <= "
                              "1e6; default: none)")
    p_check.add_argument("--quiet", action="store_true",
                         help="print only the table, notes and failures (no line per claim, no progress)")
    p_check.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                         help="run the claims in N worker processes, each loading the target once (default: the "
                              "cores available, or 1 for a target with over 256 MiB of weights, which each worker "
                              "would copy; 1: in this process); the results are the same")

    p_explain = sub.add_parser("explain", help="follow one prediction through the model, stage by stage")
    p_explain.add_argument("prompt")
    p_explain.add_argument("--target", default="smollm2",
                           help="a target with a tokenizer (default: smollm2, the trained SmolLM2-135M-Instruct; "
                                "builtin: a random-weight model that needs no download)")
    _device_dtype(p_explain)
    p_explain.add_argument("--steps", type=_steps, default=1, help=f"repeat for N generated tokens (1..{MAX_STEPS})")
    p_explain.add_argument("--temperature", type=_temperature, default=0.7,
                           help="also show probabilities at this T (a finite number >= 0; 0: greedy)")
    p_explain.add_argument("--top", type=_positive, default=10, help="how many next-token candidates to show")

    p_figures = sub.add_parser("figures", help="draw the figures of docs/figures.md (PNG and SVG) into OUTDIR")
    p_figures.add_argument("outdir")
    p_figures.add_argument("--target", default="smollm2", help="the trained model figures 2-7 read (default smollm2)")
    _device_dtype(p_figures)
    p_figures.add_argument("--only", action="append", default=[], help="only this figure, by file stem (repeatable)")

    p_zoo = sub.add_parser("zoo", help="run the catalog against every mutant of the zoo (issue #5's kill matrix)")
    p_zoo.add_argument("--markdown", action="store_true", help="print docs/kill-matrix.md")
    p_zoo.add_argument("--mutant", action="append", default=[], help="only this mutant (repeatable)")
    p_zoo.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                       help="mutants run in this many processes at once (default 1; the matrix is the same)")

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


def shrink_seconds_option(text: str) -> float:
    """A shrink budget: a number of seconds >= 0, or inf (also the type of the plugin's and conformance's option)."""
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (or inf), got {text!r}")
    return value


def _deadline_seconds(text: str) -> float:
    """An example's deadline: a number of seconds > 0, at most spec.runner.MAX_TIMEOUT (the alarm timer's range)."""
    from spec.runner import MAX_TIMEOUT

    value = _float(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 and at most {MAX_TIMEOUT:.0f} (omit "
                                         f"--timeout for no deadline), got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _temperature(text: str) -> float:
    """A sampling temperature: finite and >= 0."""
    value = _float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0: greedy), got {text!r}")
    return value


def _positive(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _jobs(text: str) -> int:
    """A number of worker processes: 1..MAX_JOBS (each loads the target; more is a typo)."""
    from spec.pool import MAX_JOBS

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_JOBS}, got {text!r}")
    return value


def _steps(text: str) -> int:
    value = _positive(text)
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_STEPS}, got {text!r}")
    return value


def _device(text: str) -> str:
    """cpu, or cuda[:N] on a machine that has it: refused here, before any work, rather than deep in a model."""
    from spec.targets.registry import check_device

    try:
        check_device(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("device ")) from None
    return text


def _device_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", type=_device, help="cpu or cuda[:N] (default cpu)")
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
    """Validate every option, build the target, run the claims (in worker processes with -j N > 1, each building
    the target again); a Ctrl-C keeps what finished (exit 130)."""
    from spec import report
    from spec.catalog import CATALOG, ordered
    from spec.check import Check
    from spec.expectations import BUILTIN
    from spec.pool import default_jobs, threads_per_worker
    from spec.runner import FAILING

    claims = ordered()
    if args.claim:
        unknown = [c for c in args.claim if c not in CATALOG]
        if unknown:
            raise InputError(f"--claim: unknown claim IDs {unknown}; `next-token-spec list` shows the catalog")
        claims = [c for c in claims if c.id in args.claim]
    if args.no_expectations and args.expectations:
        raise InputError("--expectations and --no-expectations contradict each other; give one")
    if args.report is not None:
        check_report_path(args.report)
    profile = profiles.load(args.profile)
    check = Check(args.target, device=args.device, dtype=args.dtype,
                  expectations=None if args.no_expectations else (args.expectations or BUILTIN), profile=profile,
                  seed=args.seed, shrink_seconds=args.shrink_seconds, timeout=args.timeout)
    workers = min(args.jobs, len(claims)) if args.jobs else default_jobs(check.target, len(claims))  # 1: here
    threads = threads_per_worker(workers)
    stream = None if args.quiet else Stream(sys.stdout)
    if stream is not None:
        print(f"target {check.target.describe()} on {args.device} ({args.dtype}), profile {profile}, "
              f"{len(claims)} claims, shrinking up to {check.invocation.shrink_seconds:g} s per failure"
              + (f", in {workers} worker processes ({threads} torch thread{'s' * (threads > 1)} each)"
                 if workers > 1 else ""), flush=True)
    results: list[Result] = []

    def done(r: Result) -> None:
        results.append(r)
        if stream is not None:
            stream.done(r)

    interrupted = False
    try:  # with workers, they build their own targets: this one, built to check the spec, is let go
        check.run_all(claims, jobs=workers, threads=threads, progress=stream.progress if stream else None,
                      on_result=done)
    except KeyboardInterrupt:  # Ctrl-C: what finished is shown and written, not lost
        interrupted = True
        if stream is not None:
            stream.clear()
    place = {c.id: i for i, c in enumerate(claims)}
    results.sort(key=lambda r: place[r.claim])  # the table and the report in catalog order, however they finished
    _print_results(results, gap="\n" if stream else "")
    if args.report is not None:
        report.write(args.report, results, suite=args.target)
    if interrupted:
        print(f"interrupted: {len(results)} of {len(claims)} claims finished"
              + (f"; the report of them is in {args.report}" if args.report else ""), file=sys.stderr)
        return INTERRUPTED
    return 1 if any(r.status in FAILING for r in results) else 0


def _print_results(results: list[Result], gap: str) -> None:
    """The table (after ``gap``), the notes, the summary and every failure's story."""
    from spec import report

    print(gap + report.table(results))
    if report.notes(results):
        print("\n" + report.notes(results))
    print("\n" + report.summary(results))
    fails = report.failures(results)
    if fails:
        print("\n" + fails)


def check_report_path(path: str) -> None:
    """--report names a file of a known format in an existing, writable folder; InputError otherwise (checked before
    the catalog runs, so a typo does not cost the run)."""
    if not path.strip():
        raise InputError("--report: empty file name; give a file ending in .json, .md or .xml")
    p = Path(path)
    if p.suffix not in REPORT_SUFFIXES:
        raise InputError(f"--report {path}: unknown extension {p.suffix!r}; use one of {', '.join(REPORT_SUFFIXES)}")
    folder = p.parent
    try:
        if p.is_dir():
            raise InputError(f"--report {path}: is a folder; give a file name ending in .json, .md or .xml")
        if not folder.is_dir():
            raise InputError(f"--report {path}: the folder {folder} does not exist")
    except (OSError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"--report {path!r}: not a usable path: {err}") from None
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"--report {path}: not writable")


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

    def clear(self) -> None:
        """End an indicator line left on the terminal (before a message printed after an interrupt)."""
        if self.shown:
            self._write("\r\033[K")
            self.shown = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def _progress_text(p: Progress) -> str:
    if p.shrinking:
        return f"{p.claim}: failed; shrinking ({p.shrink_tries} tries), {p.seconds:.0f} s"
    return f"{p.claim}: {p.examples}/{p.budget} examples, {p.seconds:.0f} s"


def _explain(args: argparse.Namespace) -> int:
    """Print explain's story; bad options and an empty prompt are refused before any model is loaded."""
    from spec.explain import explain

    try:
        for line in explain(args.prompt, target=args.target, device=args.device, dtype=args.dtype,
                            steps=args.steps, temperature=args.temperature, top=args.top):
            print(line)
    except RuntimeError as err:
        if not model_unavailable(err):
            raise
        return _refuse(f"--target {args.target}: the SmolLM2 model is not available. {err}. "
                       "Or pass --target builtin for a random-weight model that needs no download.")
    return 0


def _figures(args: argparse.Namespace) -> int:
    """Write each figure of spec.figures as PNG and SVG; the model is loaded only if a chosen figure needs it."""
    import time

    try:
        import matplotlib  # noqa: F401  (a dev extra, imported lazily by spec.figures)
    except ImportError as err:
        raise InputError(f"figures need matplotlib (pip install matplotlib): {err}") from None
    from spec import figures
    from spec.targets.registry import check_form, resolve

    unknown = sorted(set(args.only) - {f.stem for f in figures.FIGURES})
    if unknown:
        raise InputError(f"--only: unknown figures {unknown}; choose from {[f.stem for f in figures.FIGURES]}")
    if any(f.needs_model and (not args.only or f.stem in args.only) for f in figures.FIGURES):
        check_form(args.target)  # a typo is refused before the model-free figure is written
    start = time.perf_counter()
    written = figures.write(args.outdir, lambda: resolve(args.target, device=args.device, dtype=args.dtype),
                            only=args.only)
    for stem, (_, paths) in written.items():
        print(f"{stem}: {', '.join(str(p) for p in paths)}")
    print(f"{len(written)} figures in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _zoo(args: argparse.Namespace) -> int:
    """Run the zoo, each mutant as it is and as an opaque target (no config, reference_model, build); print the kill
    matrix (Markdown) or one line per mutant (to stderr as progress with --markdown). Exit 1 if a mutant survives, a
    mutant crashes, or an opaque mutant whose bug is observable there (no ``missing`` recorded) survives."""
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from spec import zoo
    from spec.targets.mutants import MUTANTS

    unknown = sorted(set(args.mutant) - set(MUTANTS))
    if unknown:
        raise InputError(f"--mutant: unknown mutants {unknown}; choose from {sorted(MUTANTS)}")
    start = time.perf_counter()
    names = args.mutant or list(MUTANTS)
    runs, hidden = [], []

    def show(name: str, pair: tuple[zoo.ZooRun, zoo.ZooRun]) -> None:
        runs.append(pair[0])
        hidden.append(pair[1])
        kills = ", ".join(f"{k.claim} ({k.examples}/{k.size})" for k in pair[0].kills) or "SURVIVED"
        opaque = ", ".join(f"{k.claim} ({k.examples}/{k.size})" for k in pair[1].kills) or "not killed"
        print(f"{name:28} {kills} | opaque: {opaque} [{time.perf_counter() - start:.0f} s]", flush=True,
              file=sys.stderr if args.markdown else sys.stdout)

    if args.jobs == 1:
        for name in names:
            show(name, zoo.run_both(name))
    else:  # fresh interpreters (spawn): each runs its mutants on one torch thread, as the sequential run does
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            for name, pair in zip(names, pool.map(zoo.run_both, names), strict=True):
                show(name, pair)
    if args.markdown:
        sys.stdout.write(zoo.markdown(runs, hidden))
    gaps = [r.mutant for r in hidden if not r.kills and not MUTANTS[r.mutant].missing]
    print(f"zoo: {sum(bool(r.kills) for r in runs)} of {len(runs)} mutants killed, "
          f"{sum(bool(r.kills) for r in hidden)} as opaque targets"
          + (f" (observable but not killed there: {', '.join(gaps)})" if gaps else "")
          + f", in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0 if all(r.kills and not r.crashes for r in runs) and not gaps and not any(r.crashes for r in hidden) else 1


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
