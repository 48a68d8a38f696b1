"""`--batch-size auto`: the largest batch that fits in memory, halved whenever a batch runs out of memory.

Like lm-eval's `--batch_size auto` and accelerate's `find_executable_batch_size`: on a GPU the start size
is found by trying one forward pass of `[batch, probe_length]` tokens (what log-likelihood scoring does,
all positions' logits included), halving from `max_batch` on out-of-memory. Then each probe runs with that
size, and a probe that still runs out of memory (longer sequences than the trial) is re-run with half the
batch: generation resumes from its cache, so only unfinished batches are redone.

On a CPU there is no allocator to ask (Linux over-commits, and a real shortage ends in the OOM killer,
not an exception), so `auto` starts at `CPU_BATCH` and only halves when an allocation error is raised.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, Union

from ..errors import AuditError, ConfigError

AUTO = "auto"
CPU_BATCH = 32
MAX_BATCH = 64
PROBE_LENGTH = 512

T = TypeVar("T")
BatchSize = Union[int, str]


def parse_batch_size(value: Any, flag: str = "--batch-size") -> BatchSize:
    """An integer >= 1 or 'auto'; anything else is a one-line ConfigError naming the flag."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        n = int(value)
        if n != float(value) or n < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {value}: expected a positive integer or 'auto'") from None
    return n


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error from torch (CUDA, MPS or the CPU allocator)."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


@dataclass
class BatchPlan:
    """The batch size a run uses, how it was chosen, and every halving (recorded in the manifest)."""

    requested: BatchSize
    size: int
    how: str = "given"
    halvings: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"requested": self.requested, "size": self.size, "how": self.how, "halvings": list(self.halvings)}


def _halve(plan: BatchPlan, where: str, exc: BaseException, say: Callable[[str], None]) -> None:
    if plan.size <= 1:
        raise AuditError(f"{where}: out of memory even with batch size 1 ({str(exc).splitlines()[0][:120]}); "
                         f"use --dtype bfloat16, --4bit, a smaller model or another --device") from None
    new = max(1, plan.size // 2)
    plan.halvings.append({"where": where, "from": plan.size, "to": new})
    say(f"audit: {where}: out of memory at batch size {plan.size}; retrying with {new}")
    plan.size = new
    free_memory()


def trial_forward(model, batch: int, length: int) -> None:
    """One scoring-sized forward pass: `batch` rows of `length` tokens, log-softmax over every position."""
    import torch

    from .big_model import input_device

    device = input_device(model)
    with torch.inference_mode():
        ids = torch.zeros((batch, length), dtype=torch.long, device=device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        torch.log_softmax(logits.float(), dim=-1)
    del ids, logits


def find_batch_size(model, *, max_batch: int = MAX_BATCH, length: int = PROBE_LENGTH,
                    say: Callable[[str], None] = lambda msg: None) -> BatchPlan:
    """The largest power-of-two fraction of `max_batch` whose trial forward pass fits."""
    from .loglik import max_length

    length = max(1, min(int(length), max_length(model)))
    plan = BatchPlan(requested=AUTO, size=int(max_batch), how=f"trial forward pass of {length} tokens")
    while True:
        try:
            trial_forward(model, plan.size, length)
            free_memory()
            return plan
        except Exception as exc:
            if not is_oom(exc):
                raise
            _halve(plan, "batch size search", exc, say)


def plan_for(requested: BatchSize, model, *, say: Callable[[str], None] = lambda msg: None,
             max_batch: int = MAX_BATCH) -> BatchPlan:
    """Resolve `--batch-size`: a number is used as given; `auto` is searched on an accelerator, CPU_BATCH on CPU."""
    requested = parse_batch_size(requested)
    if requested != AUTO:
        return BatchPlan(requested=requested, size=int(requested))
    try:
        from .big_model import input_device

        device_type = input_device(model).type
    except (StopIteration, AttributeError):
        device_type = "cpu"
    if device_type == "cpu":
        return BatchPlan(requested=AUTO, size=min(CPU_BATCH, max_batch), how="cpu default (no allocator to probe)")
    return find_batch_size(model, max_batch=max_batch, say=say)


def run_with_halving(fn: Callable[[int], T], plan: BatchPlan, where: str,
                     say: Callable[[str], None] = lambda msg: None) -> T:
    """`fn(batch_size)`, re-run with half the batch after an out-of-memory error (down to 1)."""
    from .. import distributed

    world = distributed.active_world()
    if world.parallel:  # data-parallel ranks must cut the same batches: the smallest size any rank found
        plan.size = min(distributed.all_gather(plan.size, "agreeing on the batch size"))
    while True:
        try:
            return fn(plan.size)
        except Exception as exc:
            if not is_oom(exc):
                raise
            if world.parallel:  # one rank alone cannot change the batches the others are cutting
                raise AuditError(f"{where}: out of memory at batch size {plan.size} on rank {world.rank}; run again "
                                 f"with --batch-size {max(1, plan.size // 2)} (generation resumes from the cache)"
                                 ) from None
            _halve(plan, where, exc, say)



def finetune_halving(finetune: Callable[..., T], fields: dict[str, Any]) -> T:
    """`audit finetune --batch-size auto`: the effective batch (batch_size x grad_accum) is a hyper-parameter,
    so it is kept; on out-of-memory the micro-batch halves and grad_accum doubles, and the run restarts
    (nothing is written before the first step, and a stale interrupted run is replaced)."""
    import sys

    start = int(fields.get("batch_size") or 8)
    accum = int(fields.get("grad_accum") or 1)
    plan = BatchPlan(requested=AUTO, size=start, how="config batch, halved on out-of-memory with grad_accum doubled")

    def attempt(size: int) -> T:
        return finetune(**{**fields, "batch_size": size, "grad_accum": accum * max(1, start // size)})

    return run_with_halving(attempt, plan, "finetune", say=lambda m: print(m, file=sys.stderr))
