"""The ``next-token-spec`` command: list the catalog, check a target, explain a prediction.

    next-token-spec list [--markdown]
    next-token-spec check TARGET [--device D] [--dtype T] [--profile P] [--report FILE] [--claim ID ...]
    next-token-spec explain "PROMPT" [--target T] [--steps N] [--temperature T]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from spec import profiles


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="next-token-spec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="print the claim catalog")
    p_list.add_argument("--markdown", action="store_true", help="print docs/claims.md")

    p_check = sub.add_parser("check", help="run the catalog against a target")
    p_check.add_argument("target", help="reference[:preset], hf:<preset>, smollm2, or module.path:factory")
    _device_dtype(p_check)
    p_check.add_argument("--profile", choices=profiles.PROFILES, default=None, help="Hypothesis profile")
    p_check.add_argument("--report", default=None, help="write a report: .json, .md or .xml (JUnit)")
    p_check.add_argument("--claim", action="append", default=[], help="only these claim IDs (repeatable)")
    p_check.add_argument("--expectations", default=None, help="a TOML file of expected deviations")

    p_explain = sub.add_parser("explain", help="follow one prediction through the model, stage by stage")
    p_explain.add_argument("prompt")
    p_explain.add_argument("--target", default="builtin", help="a target with a tokenizer (default: built-in)")
    _device_dtype(p_explain)
    p_explain.add_argument("--steps", type=int, default=1, help="repeat for N generated tokens")
    p_explain.add_argument("--temperature", type=float, default=0.7, help="also show probabilities at this T")
    p_explain.add_argument("--top", type=int, default=10, help="how many next-token candidates to show")

    args = parser.parse_args(argv)
    if args.command == "list":
        return _list(args.markdown)
    if args.command == "check":
        return _check(args)
    return _explain(args)


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
    from spec.expectations import load
    from spec.runner import FAILED, run_catalog
    from spec.targets.registry import resolve

    profile = profiles.load(args.profile)
    claims = ordered()
    if args.claim:
        unknown = [c for c in args.claim if c not in CATALOG]
        if unknown:
            print(f"unknown claim IDs: {unknown}", file=sys.stderr)
            return 2
        claims = [c for c in claims if c.id in args.claim]
    target = resolve(args.target, device=args.device, dtype=args.dtype)
    deviations = load(args.expectations, set(CATALOG)) if args.expectations else {}
    print(f"target {target.describe()} on {args.device} ({args.dtype}), profile {profile}, "
          f"{len(claims)} claims", flush=True)
    results = run_catalog(claims, target, profile=settings.get_profile(profile), deviations=deviations,
                          target_spec=args.target, profile_name=profile)
    print(report.table(results))
    print("\n" + report.summary(results))
    fails = report.failures(results, CATALOG)
    if fails:
        print("\n" + fails)
    if args.report:
        report.write(args.report, results, suite=args.target)
    return 1 if any(r.status == FAILED for r in results) else 0


def _explain(args: argparse.Namespace) -> int:
    from spec.explain import explain

    if args.steps < 1:
        print("--steps must be >= 1", file=sys.stderr)
        return 2
    for line in explain(args.prompt, target=args.target, device=args.device, dtype=args.dtype,
                        steps=args.steps, temperature=args.temperature, top=args.top):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
