"""Data-parallel probe runs: `torchrun --nproc_per_node N -m audit probe ...` or `accelerate launch -m audit
probe ...`, on torch.distributed (gloo on CPU, NCCL on GPUs), no scheduler of our own.

Where the work is split: in the shared batched engines, not in the probes. `audit.lm.generation.generate`
and `audit.lm.loglik_batches.run_requests` build the same list of batches a one-process run builds, each rank
runs every N-th batch (`my_share`), and the results are all-gathered (`all_gather`), so every rank returns
the complete, identically ordered output and the probe logic above it runs unchanged on every rank. Because
the batches themselves are the one-process batches (same rows, same padding), every number is the one a
single process computes, bit for bit on the same kernels; per-row seeding keeps sampled continuations
independent of which rank draws them.

Who writes: rank 0 alone owns the run directory (lock, manifest, results); the other ranks run with a
private scratch directory that is deleted afterwards (`probe_run_dir`). Each rank appends the continuations
it generates to its own generation-cache shard, so a re-run (with any number of ranks) resumes from them.

When a rank dies: the others fail at their next collective, when gloo/NCCL reports the closed connection,
or at the latest after the collective timeout (AUDIT_COLLECTIVE_TIMEOUT seconds, default 1800), with a one-line
`RankFailedError` (exit 3); torchrun also stops the remaining workers as soon as one exits non-zero. Rank 0
never marks a probe complete, so the run keeps `status: unfinished` and reports/gates refuse it.

Sharding is switched on only inside `sharding()` (which `audit.api.run_probes` enters): code that calls the
engines on one rank only (say, an evaluation on the main process of a training job) is never split.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

from .errors import AuditError

T = TypeVar("T")
TIMEOUT_ENV = "AUDIT_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


class RankFailedError(AuditError):
    """Another rank of a data-parallel run stopped (died, or failed): this rank cannot finish either."""

    exit_code = 3


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank `rank` of `size` processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


_SHARDING: contextvars.ContextVar[bool] = contextvars.ContextVar("audit_sharding", default=False)


def launched_size() -> int:
    """The WORLD_SIZE a launcher (torchrun, accelerate launch) gave this process; 1 without one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def collective_timeout() -> float:
    """Seconds a rank waits in a collective for the others (the longest work imbalance must fit in it)."""
    from .errors import ConfigError

    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0") from None
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def init_from_launcher() -> World:
    """Join the process group the launcher describes (env:// rendezvous); a no-op for one process.

    On GPUs each rank takes the GPU of its LOCAL_RANK, so `--device cuda` means "my GPU"."""
    if launched_size() <= 1:
        return current_world()
    import datetime

    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=collective_timeout()))
    world = current_world()
    if not world.is_main:  # one progress display per run: rank 0's
        os.environ["AUDIT_NO_PROGRESS"] = "1"
    return world


def current_world() -> World:
    """The process group this process belongs to (World() when torch.distributed is not initialised)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch always ships it
        return World()
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def active_world() -> World:
    """The world the engines shard over: the process group inside `sharding()`, else one process."""
    return current_world() if _SHARDING.get() else World()


@contextlib.contextmanager
def sharding() -> Iterator[World]:
    """Let the batched engines split their batches over the ranks for the duration of the block. Every
    rank must make the same engine calls with the same inputs inside it (probes are deterministic)."""
    token = _SHARDING.set(True)
    try:
        yield current_world()
    finally:
        _SHARDING.reset(token)


@contextlib.contextmanager
def unsharded() -> Iterator[None]:
    """Switch the engines' sharding off inside a block that each rank runs on different inputs (its share
    of rl episodes, say): an engine call there must not wait for the other ranks."""
    token = _SHARDING.set(False)
    try:
        yield
    finally:
        _SHARDING.reset(token)


def my_share(units: Sequence[T]) -> list[T]:
    """This rank's units of work: every size-th one, starting at its rank (the units are sorted longest
    first by the engines, so round-robin keeps the ranks' loads close)."""
    w = active_world()
    return list(units[w.rank::w.size]) if w.parallel else list(units)


def _collective(what: str, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # gloo/NCCL: closed connection, timeout, aborted group
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailedError(f"data-parallel run: another rank stopped during {what} ({first[:200]}); the run "
                              f"is left unfinished; run the same command again to resume from the cache") from None


def all_gather(obj: Any, what: str = "gathering results") -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (`[obj]` for one process)."""
    w = active_world()
    if not w.parallel:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    _collective(what, dist.all_gather_object, out, obj)
    return out


def broadcast(obj: Any, what: str = "sharing the cache") -> Any:
    """Rank 0's `obj` on every rank."""
    w = active_world()
    if not w.parallel:
        return obj
    import torch.distributed as dist

    box = [obj if w.is_main else None]
    _collective(what, dist.broadcast_object_list, box, 0)
    return box[0]


def barrier(what: str = "waiting for the other ranks") -> None:
    w = current_world()
    if w.parallel:
        import torch.distributed as dist

        _collective(what, dist.barrier)


@contextlib.contextmanager
def probe_run_dir(out: Path) -> Iterator[tuple[World, Path]]:
    """(world, the directory this rank writes): `out` on rank 0, a private scratch directory on the others
    (removed on exit). On success all ranks leave together, after rank 0 has written everything."""
    world = init_from_launcher()
    if not world.parallel:
        yield world, Path(out)
        return
    scratch = None if world.is_main else Path(tempfile.mkdtemp(prefix=f"audit-rank{world.rank}-"))
    try:
        with sharding():
            yield world, Path(out) if scratch is None else scratch
        barrier("finishing the run")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def rank_zero_writes(run: Any) -> Any:
    """Decorate a `run(..., out, ...)` function that writes a run directory: under a launcher, every rank
    runs it with sharded engines, rank 0 into `out` and the others into scratch; all return `out`."""
    import functools
    import inspect

    signature = inspect.signature(run)

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if launched_size() <= 1 or _SHARDING.get():
            return run(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        out = Path(bound.arguments["out"])
        with probe_run_dir(out) as (world, where):
            bound.arguments["out"] = where
            result = run(*bound.args, **bound.kwargs)
        return result if world.is_main else out

    return wrapper
