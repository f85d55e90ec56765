"""Reports of a catalog run: a terminal table, JSON, Markdown, or JUnit XML (chosen by file extension)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree as ET

from spec.catalog import Claim
from spec.runner import FAILING, HELD, ILLUSTRATED, INCONCLUSIVE, PARTLY, Result


def _worst(r: Result) -> str:
    return "-" if r.worst is None else f"{r.worst:.2g}"


def table(results: list[Result], width: int = 60) -> str:
    """One row per claim: ID, claim, status, examples, worst error / tolerance."""
    rows = [("claim", "statement", "status", "examples", "worst")]
    for r in results:
        s = r.statement if len(r.statement) <= width else r.statement[: width - 1] + "…"
        rows.append((r.claim, s, r.status, str(r.examples), _worst(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def notes(results: list[Result]) -> str:
    """What each target chose where the sources leave a choice open, and weight facts set aside: information."""
    lines = [f"  {r.claim}: {r.notes_line()}" for r in results if r.notes]
    if not lines:
        return ""
    return "\n".join(["noted (choices the sources leave open; facts set aside; departures the target declares; "
                      "not failures):", *lines])


def summary(results: list[Result]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def failure(r: Result) -> str:
    """The full story of one failure: claim, source, tolerance, the error, the worst error measured, the
    counterexample as values (and how far it was shrunk), and the one-line reproducer."""
    if r.status == INCONCLUSIVE:  # nothing was checked: no counterexample, say what the draws ran into
        return "\n".join([f"=== {r.claim} inconclusive on {r.target}: {r.statement}", f"source: {r.source}",
                          r.detail, f"reproduce: {r.reproduce}"])
    return "\n".join([f"=== {r.claim} failed on {r.target}: {r.statement}", f"source: {r.source}",
                      f"tolerance: {r.tolerance}", f"worst error / tolerance measured: {_worst(r)}", r.detail,
                      r.shrink_line() if r.shrink else "counterexample:", r.counterexample or "  (none)",
                      f"reproduce: {r.reproduce}"])


def failures(results: list[Result], claims: dict[str, Claim] | None = None) -> str:
    """Every failure's story (``failure``), one after the other; ``claims`` fills in the source and tolerance of a
    result that lacks them."""
    out = []
    for r in results:
        if r.status not in FAILING:
            continue
        if claims and r.claim in claims and not r.source:
            r = replace(r, source=claims[r.claim].source, tolerance=claims[r.claim].tolerance)
        out += [failure(r), ""]
    return "\n".join(out)


def markdown(results: list[Result], level: int = 2) -> str:
    """The table, the notes, then a failures section (a heading of ``level``) with each failure's whole story."""
    lines = ["| claim | statement | status | examples | worst error / tolerance |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.claim} | {r.statement.replace('|', '/')} | {r.status} | {r.examples} | {_worst(r)} |")
    noted = [f"- {r.claim}: {r.notes_line()}" for r in results if r.notes]
    if noted:
        lines += ["", "Noted (choices the sources leave open, facts set aside, departures the target declares; "
                      "not failures):", "", *noted]
    failed = [r for r in results if r.status in FAILING]
    if failed:
        lines += ["", "#" * level + " Failures"]
        for r in failed:
            lines += ["", "#" * (level + 1) + f" {r.claim} on {r.target}", "", "```text", failure(r), "```"]
    return "\n".join(lines) + "\n"


def junit(results: list[Result], suite: str) -> str:
    root = ET.Element("testsuite", name=suite, tests=str(len(results)),
                      failures=str(sum(r.status in FAILING for r in results)),
                      skipped=str(sum(r.status not in HELD + FAILING for r in results)))
    for r in results:
        case = ET.SubElement(root, "testcase", classname=r.target, name=r.claim, time=f"{r.seconds:.3f}")
        if r.notes:
            props = ET.SubElement(case, "properties")
            for topic, seen in r.notes.items():
                ET.SubElement(props, "property", name=topic, value=", ".join(seen))
        if r.status in FAILING:
            fail = ET.SubElement(case, "failure", message=r.detail.splitlines()[0] if r.detail else r.status)
            fail.text = failure(r)
        elif r.status not in HELD or r.status == ILLUSTRATED:  # an illustration is never a pass of the target
            ET.SubElement(case, "skipped", message=f"{r.status}: {r.detail}")
        elif r.status == PARTLY:
            ET.SubElement(ET.SubElement(case, "properties"), "property", name="partly run", value=r.detail)
    return ET.tostring(root, encoding="unicode")


def write(path: str | Path, results: list[Result], suite: str) -> None:
    """Write the report in the format the extension names (.json, .md, .xml)."""
    p = Path(path)
    if p.suffix == ".json":
        p.write_text(json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8")
    elif p.suffix == ".md":
        p.write_text(markdown(results), encoding="utf-8")
    elif p.suffix == ".xml":
        p.write_text(junit(results, suite), encoding="utf-8")
    else:
        raise ValueError(f"--report: unknown extension {p.suffix!r}; use .json, .md or .xml")


def catalog_markdown(claims: list[Claim]) -> str:
    """docs/claims.md: the catalog as a table (generated; a test keeps it current)."""
    lines = ["# The claim catalog", "",
             "Generated by `next-token-spec list --markdown > docs/claims.md`; a test fails when it is stale.", "",
             "A claim whose kind says *illustration* is executable documentation: it shows the documents' "
             "mathematics on the target's numbers (or on none) without the target computing it, and is reported "
             "\"illustrated\", never \"passed\".", "",
             "| ID | claim | source | needs | kind | tolerance |", "|---|---|---|---|---|---|"]
    for c in claims:
        needs = ", ".join([*c.needs, *([" or ".join(c.needs_any)] if c.needs_any else [])]) or "logits only"
        kind = f"{c.kind}; illustration: {c.illustration}" if c.illustration else c.kind
        cells = [c.id, c.statement, c.source, needs, kind, c.tolerance]
        lines.append("| " + " | ".join(x.replace("|", "/").replace("\n", " ") for x in cells) + " |")
    return "\n".join(lines) + "\n"
