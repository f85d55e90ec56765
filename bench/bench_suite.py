"""Issue #13's goals in one run: how long `check` takes on four targets, how much memory `check smollm2` needs, and
how long the README's test command's pytest part takes.

    python bench/bench_suite.py [--skip-pytest] [-j N] [--mutant NAME] [--llama-1b]

Each case is a subprocess run from the repository root, as a person would type it (`check` with --quiet, the
derandomized ci profile; `-j N` is passed through to every check; without it, check's default: the cores available,
one process for a target with over 256 MiB of weights). Timed: `check reference:llama-tiny`, `check hf:llama`,
`check mutant:NAME` (a zoo mutant the catalog kills: its failures are shrunk, up to 5 s each), `check smollm2`, and
`python -m pytest -n 2` (the README's command after its installs; it takes minutes, --skip-pytest leaves it out),
and with --llama-1b ``check bench.llama_1b:factory``, a random-weight Llama with Llama-3.2-1B's shapes (goal: a
verdict in 15 min at 1.5x its weights; bench/bench_claims.py profiles it claim by claim). Memory of `check smollm2`,
two ways: the peak resident set of its largest process (the parent or one worker: VmHWM sampled every 0.2 s from
/proc, as the workers are the fork server's children, beyond wait4's ru_maxrss), and the peak of the whole process
tree's proportional set size (PSS: shared pages counted once, split between the processes sharing them), sampled as
often -- with workers, the tree's is what the machine must have.

Prints a table with each goal beside the measured value, the exit statuses, and the load average at the start and
at the end: on a shared machine the times stretch with the load, the memory hardly moves.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, "-m", "spec.cli", "check"]
MB = 1e6


@dataclass
class Case:
    name: str
    argv: list[str]
    goal_seconds: float
    expect_exit: tuple[int, ...] = (0,)  # a mutant's check fails: exit 1 is its success
    goal_memory: float | None = None  # bytes, for the tree's peak PSS


@dataclass
class Measured:
    seconds: float
    exit: int
    maxrss: int  # bytes, the largest process of the tree
    tree_pss: int  # bytes, the tree's peak proportional set size (sampled); 0 where /proc has no smaps_rollup
    tail: str  # the last lines of its output


LLAMA_1B_WEIGHTS = 4.943e9  # bytes: bench.llama_1b's float32 parameters (1.236 B, tied)


def cases(jobs: int | None, mutant: str, pytest: bool, llama_1b: bool = False) -> list[Case]:
    j = ["-j", str(jobs)] if jobs else []
    out = [
        Case("check reference:llama-tiny", [*CHECK, "reference:llama-tiny", "--quiet", "--profile", "ci", *j], 5),
        Case("check hf:llama", [*CHECK, "hf:llama", "--quiet", "--profile", "ci", *j], 5),
        Case(f"check mutant:{mutant} (failures)", [*CHECK, f"mutant:{mutant}", "--quiet", "--profile", "ci", *j],
             30, expect_exit=(1,)),
        Case("check smollm2", [*CHECK, "smollm2", "--quiet", "--profile", "ci", *j], 45, goal_memory=1.2e9),
    ]
    if llama_1b:  # outside CI: minutes of a 1B model's forward passes; check's default -j is 1 for it
        out.append(Case("check bench.llama_1b:factory (1.24 B parameters)",
                        [*CHECK, "bench.llama_1b:factory", "--quiet", "--profile", "ci", *j], 15 * 60,
                        goal_memory=1.5 * LLAMA_1B_WEIGHTS))
    if pytest:
        out.append(Case("README pytest (python -m pytest -n 2)", [sys.executable, "-m", "pytest", "-n", "2", "-q"],
                        6 * 60))
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def field(path: str, name: str) -> int:
    """A ``Name: N kB`` field of a /proc file, in bytes (0 if the process is gone or the file cannot say)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run(case: Case) -> Measured:
    """Run one case; its wall time, exit status, peak RSS of its largest process and the tree's peak PSS."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(case.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        peak, largest = [0], [0]
        stop = threading.Event()

        def sample() -> None:  # the workers are the fork server's children: wait4 below does not see them
            while not stop.wait(0.2):
                tree = descendants(proc.pid)
                peak[0] = max(peak[0], sum(field(f"/proc/{p}/smaps_rollup", "Pss") for p in tree))
                largest[0] = max([largest[0], *(field(f"/proc/{p}/status", "VmHWM") for p in tree)])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss: the largest of the processes it waited for
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        tail = "\n".join(out.read().strip().splitlines()[-3:])
    return Measured(seconds, proc.returncode, max(usage.ru_maxrss * 1024, largest[0]), peak[0], tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skip-pytest", action="store_true", help="leave out the README's pytest run (minutes)")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="passed to every check (default: check's own)")
    parser.add_argument("--mutant", default="gqa-tiled-heads", help="the zoo mutant (default gqa-tiled-heads)")
    parser.add_argument("--llama-1b", action="store_true",
                        help="also check a random Llama with Llama-3.2-1B's shapes (bench/llama_1b.py; 4.9 GB, long)")
    args = parser.parse_args()
    load_start = os.getloadavg()
    print(f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} available), load average "
          f"{' '.join(f'{x:.2f}' for x in load_start)}; check -j {args.jobs or 'default'}"
          + (f"; OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}" if "OMP_NUM_THREADS" in os.environ else ""),
          flush=True)
    rows: list[tuple[str, str, str, str, str]] = []
    for case in cases(args.jobs, args.mutant, not args.skip_pytest, args.llama_1b):
        m = run(case)
        ok = m.seconds <= case.goal_seconds and m.exit in case.expect_exit
        rows.append((case.name, f"<= {case.goal_seconds:g} s", f"{m.seconds:.1f} s", str(m.exit),
                     "met" if ok else "MISSED"))
        if case.goal_memory is not None:
            rows.append(("  peak memory, whole tree (PSS)", f"<= {case.goal_memory / 1e9:g} GB",
                         f"{m.tree_pss / MB:.0f} MB", "", "met" if 0 < m.tree_pss <= case.goal_memory else "MISSED"))
            rows.append(("  peak RSS, largest process", "", f"{m.maxrss / MB:.0f} MB", "", ""))
        print(f"{case.name}: {m.seconds:.1f} s, exit {m.exit}, largest process {m.maxrss / MB:.0f} MB, tree PSS "
              f"{m.tree_pss / MB:.0f} MB; `{shlex.join(case.argv[1:])}`\n  " + m.tail.replace("\n", "\n  "),
              flush=True)
    widths = [max(len(str(r[i])) for r in [("case", "goal", "measured", "exit", ""), *rows]) for i in range(5)]
    print()
    for r in [("case", "goal", "measured", "exit", ""), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"load average at start {' '.join(f'{x:.2f}' for x in load_start)}, at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
