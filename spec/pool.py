"""``next-token-spec check -j N``: the claims run in N worker processes, each loading the target once.

Each worker is forked from multiprocessing's fork server, a fresh interpreter that has imported torch, Hypothesis,
the catalog and the modules the parent's target needed, and has run nothing (a fork of a process that has run torch
may hang in its thread pools): the imports, seconds of CPU, are paid once per run instead of once per worker, and
their pages are shared. (Where there is no fork server, each worker is spawned and imports for itself.) A worker
gets the parent's ``sys.path`` (so a ``module.path:factory`` target imports there as it does in the parent),
ignores SIGINT (Ctrl-C is the parent's to handle: it ends the workers) and limits torch to ``threads`` threads.
It builds the target from the same spec, device and dtype, loads the same Hypothesis profile, then runs the claims
the parent hands it one at a time, each through ``spec.runner.run_claim`` exactly as an in-process run does. The
derandomized profiles seed each claim's examples from the claim alone, so the results are the ones a run in one
process gives (the worst error / tolerance to its last bits only, which hang on memory alignment in any process:
``--claim ATT-1`` alone gives another tenth digit than ATT-1 in a whole run).

Each worker talks to the parent through a pipe of its own: the parent sends a claim ID (and its expected deviation,
if any), the worker sends back its progress (at most five times a second) and the Result. The parent hands the
claims out in catalog order as workers become free. A worker that dies while running a claim (a crash in the
target's native code, the kernel's OOM killer) fails that claim, naming the exit status, and a fresh worker takes
its place for the claims left; an exception outside the claim (a bug in the runner) stops the run and is raised in
the parent with the worker's traceback as a note, as it would be in one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from spec.catalog import Claim
    from spec.expectations import Deviation
    from spec.runner import Invocation, Progress, Result
    from spec.target import Target

SHARED_WEIGHTS_LIMIT = 256 * 2**20  # bytes of weights above which check runs in one process unless told -j N
MAX_JOBS = 256  # more worker processes than this is a typo (each loads the target), not a wish
PROGRESS_EVERY = 0.2  # seconds between a worker's progress messages (the terminal indicator's own rate)
# what every worker imports, preloaded once in the fork server; with the parent's own spec.* and reference.*
# modules (the target's among them) and these libraries where the parent has imported them
PRELOAD = ("torch", "hypothesis", "spec.runner", "spec.claims", "spec.targets.registry")
LIBRARIES = ("torch.distributed.tensor",  # torch.testing.assert_close imports it on its first call: ~2 s
             "scipy.stats", "numpy", "transformers", "gguf", "safetensors", "tokenizers")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform says, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def weights_bytes(target: object) -> int:
    """The bytes of the parameters of the torch modules a target holds (its attributes), each storage counted once;
    0 where it holds none (an adapter over another runtime)."""
    import torch

    storages: dict[int, int] = {}
    for model in (m for m in vars(target).values() if isinstance(m, torch.nn.Module)):
        for p in model.parameters():
            storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(storages.values())


def default_jobs(target: object, claims: int, cores: int | None = None) -> int:
    """``check``'s worker count when -j is not given: one per core for a target whose weights are at most
    :data:`SHARED_WEIGHTS_LIMIT`, else 1 (in this process). Each worker holds its own copy of the weights, so for a
    big model workers multiply the memory a verdict needs (a 1B model's 4.9 GB, once per worker), while its time
    goes to large matrix products that torch's threads already spread over every core."""
    n = available_cores() if cores is None else cores
    return max(1, min(n if weights_bytes(target) <= SHARED_WEIGHTS_LIMIT else 1, claims))


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """torch threads for each of ``workers`` processes: the cores shared out, at least one."""
    return max(1, (available_cores() if cores is None else cores) // max(1, workers))


@dataclass(frozen=True)
class Setup:
    """What a worker needs to build the parent's target and run claims as the parent would."""

    target_spec: str
    device: str
    dtype: str
    profile: str  # a registered Hypothesis profile's name (spec.profiles)
    invocation: Invocation
    threads: int
    sys_path: tuple[str, ...]


def run_pool(claims: Sequence[Claim], setup: Setup, workers: int, *,
             deviations: dict[str, Deviation] | None = None, progress: Callable[[Progress], None] | None = None,
             on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Run ``claims`` in ``workers`` spawned processes; ``on_result`` sees each result as it arrives (in the order
    claims finish), and the list returned is in the order of ``claims``.

    A KeyboardInterrupt (Ctrl-C in the parent) or any other exception ends every worker before it propagates.
    """
    devs = deviations or {}
    todo = list(claims)
    by_id = {c.id: c for c in claims}
    results: dict[str, Result] = {}
    ctx = _context()
    live: dict[Connection, _Worker] = {}

    def start() -> None:
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_work, args=(setup, theirs), daemon=True, name="next-token-spec-worker")
        proc.start()
        theirs.close()  # the worker holds its end; the parent's copy would keep the pipe open after a crash
        live[ours] = _Worker(proc, ours)

    def hand_out(w: _Worker) -> None:
        """The next claim to a free worker, or the word to stop."""
        if todo:
            c = todo.pop(0)
            w.claim = c.id
            w.conn.send((c.id, devs.get(c.id)))
        else:
            w.claim = None
            w.conn.send(None)

    def finish(r: Result) -> None:
        results[r.claim] = r
        if on_result is not None:
            on_result(r)

    try:
        for _ in range(min(workers, len(todo))):
            start()
        while len(results) < len(by_id):
            if not live:
                raise RuntimeError("next-token-spec check: every worker process ended before the claims were done")
            waited = wait([*live, *(w.proc.sentinel for w in live.values())])
            for conn in [c for c in live if c in waited]:  # messages first: a result sent just before exiting
                w = live[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):  # the worker is gone: its sentinel says how, below
                    continue
                if kind == "progress" and progress is not None:
                    progress(payload)
                elif kind == "result":
                    finish(payload)
                    hand_out(w)
                elif kind == "ready":
                    w.ready = True
                    hand_out(w)
                elif kind == "error":
                    raise payload
            for conn, w in list(live.items()):
                if w.proc.sentinel in waited or not w.proc.is_alive():
                    while conn.poll():  # anything it sent before it ended
                        try:
                            kind, payload = conn.recv()
                        except (EOFError, OSError):
                            break
                        if kind == "result":
                            finish(payload)
                            w.claim = None
                        elif kind == "error":
                            raise payload
                    w.proc.join()
                    del live[conn]
                    conn.close()
                    if not w.ready:  # it could not even build the target: another would fare no better
                        raise RuntimeError(f"a next-token-spec worker process died building the target "
                                           f"{setup.target_spec} ({_how(w.proc.exitcode)})")
                    if w.claim is not None and w.claim not in results:  # it died running this claim
                        finish(_died(by_id[w.claim], w.proc.exitcode, setup))
                    if todo and len(live) < workers:
                        start()
    finally:
        _end(list(live.values()))
    return [results[c.id] for c in claims if c.id in results]


def _context() -> Any:  # a SpawnContext or ForkServerContext (the latter POSIX only)
    """The fork server, told what to preload (only heeded when it starts: once per process), or spawn without one."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ours = [m for m in sys.modules if m.split(".")[0] in ("spec", "reference") and not m.startswith("spec.plugin")]
    ctx.set_forkserver_preload([*PRELOAD, *(m for m in LIBRARIES if m in sys.modules), *sorted(ours)])
    return ctx


def release_parent_copy() -> None:
    """Give back the memory of the parent's own copy of the target, once the caller has dropped its references:
    the loaded models a target module keeps for the process's life (spec.targets.smollm2), collected, and the freed
    heap returned to the system (glibc's malloc_trim; elsewhere the allocator decides). SmolLM2: ~990 -> ~250 MB."""
    import gc

    smollm2 = sys.modules.get("spec.targets.smollm2")
    if smollm2 is not None:
        smollm2.forget()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


@dataclass
class _Worker:
    proc: BaseProcess
    conn: Connection
    claim: str | None = None  # the claim it is running
    ready: bool = False  # it has built the target


def _end(workers: list[_Worker]) -> None:
    """Stop every worker still running (a finished one has already exited) and wait for it."""
    for w in workers:
        if w.proc.is_alive():
            w.proc.terminate()
    for w in workers:
        w.proc.join(5)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join()
        w.conn.close()


def _died(claim: Claim, exitcode: int | None, setup: Setup) -> Result:
    """The result of a claim whose worker process died under it: a failure naming how it died."""
    from spec.runner import FAILED, Result

    named = cast("Target", SimpleNamespace(name=setup.target_spec, device=setup.device, dtype=setup.dtype))
    return Result(claim.id, claim.statement, setup.target_spec, FAILED, source=claim.source,
                  tolerance=claim.tolerance, shrink_seconds=setup.invocation.shrink_seconds,
                  detail=f"the worker process running this claim died ({_how(exitcode)}): a crash in native code, "
                         "or killed (out of memory?); rerun it alone with the command below",
                  reproduce=setup.invocation.command(claim.id, named))


def _how(exitcode: int | None) -> str:
    """How a process ended, in words: its exit status, or the signal that killed it."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def _work(setup: Setup, conn: Connection) -> None:
    """A worker's life: build the target, then run each claim the parent sends until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    sys.path[:] = list(setup.sys_path)
    try:
        import torch
        from hypothesis import settings

        from spec import profiles
        from spec.catalog import CATALOG, load_all
        from spec.runner import run_claim
        from spec.targets.registry import resolve

        torch.set_num_threads(setup.threads)
        profiles.load(setup.profile)
        profile = settings.get_profile(setup.profile)
        load_all()
        target = resolve(setup.target_spec, device=setup.device, dtype=setup.dtype)
    except BaseException as err:  # sent to the parent, which raises it
        _send(conn, ("error", _portable(err)))
        return
    _send(conn, ("ready", None))
    last = [0.0]

    def report(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            _send(conn, ("progress", p))

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        claim_id, deviation = task
        try:
            result = run_claim(CATALOG[claim_id], target, profile=profile, deviation=deviation,
                               invocation=setup.invocation, progress=report)
        except BaseException as err:  # outside any claim's verdict: the parent raises it
            _send(conn, ("error", _portable(err)))
            return
        last[0] = 0.0
        _send(conn, ("result", result))


def _send(conn: Connection, message: tuple[str, Any]) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):  # the parent is gone; nothing to tell
        sys.exit(0)


def _portable(err: BaseException) -> BaseException:
    """``err`` as the parent can unpickle it, with this process's traceback as a note."""
    note = "in a next-token-spec worker process:\n" + "".join(traceback.format_exception(err)).rstrip()
    try:
        pickle.loads(pickle.dumps(err))
        out = err
    except Exception:  # a type that does not pickle: its words survive
        out = RuntimeError(f"{type(err).__name__}: {err}")
    out.__traceback__ = None
    out.add_note(note)  # a traceback for a bug; an InputError prints its message alone
    return out


__all__ = ["MAX_JOBS", "Setup", "available_cores", "release_parent_copy", "run_pool", "threads_per_worker"]
