"""Quantization separated from adaptation, for every quantized checkpoint of a study (QLoRA, CLoQ,
IR-QLoRA, LoftQ): three numbers per planted behaviour instead of one.

    full-precision base   the pre-trained model                          (the study's base run)
    quantized base        the checkpoint's frozen base, adapter disabled (probed here, on its own)
    quantized + adapter   the checkpoint as trained                      (the study's checkpoint run)

`quantization effect` = quantized base - full-precision base; `adaptation effect` = quantized + adapter -
quantized base. Both `remaining` shares are against the full-precision base and full FT, like every other
row of the summary: `remaining` of the adapted model, and `remaining_quantized_base` of the quantized base
alone (about 1 when quantizing changed nothing; lower when quantizing itself removed some of it).

The quantized bases are probed once each (QLoRA and CLoQ-NF4 on the same base share one) into
RUNS/<first label>.quantized-base/, cached by a stamp of the probe settings and the base's identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..finetune.quantized_base import QuantizedBase, quantized_base_of

STAMP = "quant_split_stamp.txt"
SUFFIX = ".quantized-base"


@dataclass(frozen=True)
class Estimate:
    """A metric value with its 95% CI (None where the run did not produce it)."""

    value: Optional[float]
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    n: Optional[int] = None

    @classmethod
    def of(cls, m: Optional[dict[str, Any]]) -> "Estimate":
        m = m or {}
        return cls(m.get("value"), m.get("ci_low"), m.get("ci_high"), m.get("n"))


@dataclass(frozen=True)
class QuantSplitRow:
    """One behaviour of one quantized checkpoint, split into what quantization and adaptation did."""

    behaviour: str
    checkpoint: str
    method: str
    rank: Optional[int]
    full_precision_base: Estimate
    quantized_base: Estimate
    quantized_adapted: Estimate
    full_ft: Estimate
    quantization_effect: Optional[float]
    adaptation_effect: Optional[float]
    remaining: Optional[float]
    remaining_quantized_base: Optional[float]
    quantized_base_run: str


def _diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def _remaining(value: Optional[float], base: Optional[float], ft: Optional[float]) -> Optional[float]:
    if value is None or base is None or ft is None or abs(base - ft) < 1e-9:
        return None
    return (value - ft) / (base - ft)


def quantized_checkpoints(ckpt_dirs: dict[str, Path]) -> dict[str, QuantizedBase]:
    """The checkpoints (label -> fine-tune dir) whose base is quantized, with their quantized base."""
    out = {}
    for label, d in ckpt_dirs.items():
        qb = quantized_base_of(d)
        if qb is not None:
            out[label] = qb
    return out


def probe_quantized_bases(ckpt_dirs: dict[str, Path], runs_dir: Path, probes: list[str], settings_digest: str,
                          run: Callable[[Any, Path, str], None], stages) -> dict[str, Path]:
    """Probe each distinct quantized base once; returns checkpoint label -> the run dir of its quantized base.

    `run(handle, run_dir, label)` runs `probes` on a loaded model into run_dir (the caller's data and options);
    `settings_digest` changes whenever those settings do, so a stale run is redone. `stages`: the study's
    progress (`.run(name, fn, cached=...)` times and logs a stage, `.log(line)`)."""
    from ..api import probe_dir_name
    from ..finetune.quantized_base import load_quantized_base
    from ..results import write_text_atomic

    by_identity: dict[str, Path] = {}
    out: dict[str, Path] = {}
    for label, qb in quantized_checkpoints(ckpt_dirs).items():
        ident = qb.identity()
        if ident in by_identity:
            out[label] = by_identity[ident]
            stages.log(f"quantized base of {label}: the same as {by_identity[ident].name}")
            continue
        rd = runs_dir / f"{label}{SUFFIX}"
        stamp = hashlib.sha256(f"{settings_digest}:{ident}".encode()).hexdigest()[:16]
        done = (rd / STAMP).is_file() and (rd / STAMP).read_text(encoding="utf-8").strip() == stamp and \
            all((rd / probe_dir_name(p) / "result.json").is_file() for p in probes)
        def go(qb=qb, rd=rd, label=label, stamp=stamp):
            run(load_quantized_base(qb), rd, f"{label}{SUFFIX}")
            write_text_atomic(rd / STAMP, stamp + "\n")

        stages.run(f"probes on the quantized base of {label} ({qb.path.name}{', 4-bit' if qb.load_in_4bit else ''})",
                   go, cached=done)
        by_identity[ident] = out[label] = rd
    return out


def quant_split(behaviours: list, run_dirs: dict[str, Path], quantized_runs: dict[str, Path],
                checkpoints: list, ref_label: str,
                read: Callable[[Path, Any], Optional[dict[str, Any]]],
                no_ratio: frozenset = frozenset()) -> list[QuantSplitRow]:
    """Rows of the split for every quantized checkpoint and behaviour.

    `behaviours`: objects with `.name`; `checkpoints`: objects with `.label`, `.method`, `.rank`;
    `read(run_dir, behaviour)` -> {value, ci_low, ci_high, n} or None (the summary's own metric reader);
    `no_ratio`: names of behaviours whose `remaining` the summary leaves undefined (plant not shown)."""
    rows = []
    for b in behaviours:
        fp, ft = Estimate.of(read(run_dirs["base"], b)), Estimate.of(read(run_dirs[ref_label], b))
        ratio = b.name not in no_ratio
        for cp in checkpoints:
            if cp.label not in quantized_runs:
                continue
            qb = Estimate.of(read(quantized_runs[cp.label], b))
            ad = Estimate.of(read(run_dirs[cp.label], b))
            rows.append(QuantSplitRow(
                behaviour=b.name, checkpoint=cp.label, method=cp.method, rank=cp.rank, full_precision_base=fp,
                quantized_base=qb, quantized_adapted=ad, full_ft=ft,
                quantization_effect=_diff(qb.value, fp.value), adaptation_effect=_diff(ad.value, qb.value),
                remaining=_remaining(ad.value, fp.value, ft.value) if ratio else None,
                remaining_quantized_base=_remaining(qb.value, fp.value, ft.value) if ratio else None,
                quantized_base_run=quantized_runs[cp.label].name))
    return rows


def split_records(rows: list[QuantSplitRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def split_table(records: list[dict[str, Any]]):
    """A rich Table: per quantized checkpoint and behaviour, the three numbers and the two effects."""
    from rich.table import Table

    def num(x: Optional[float]) -> str:
        return "" if x is None else f"{x:.3g}"

    def est(e: dict[str, Any]) -> str:
        s = num(e.get("value")) or "undefined"
        if e.get("ci_low") is not None and e.get("ci_high") is not None:
            s += f" [{e['ci_low']:.3g}, {e['ci_high']:.3g}]"
        return s

    t = Table(title="quantization separated from adaptation (remaining: against the full-precision base and full FT)")
    for col in ("checkpoint", "behaviour", "full-precision base", "quantized base (adapter off)",
                "quantized + adapter", "quantization effect", "adaptation effect", "remaining"):
        t.add_column(col)
    for r in records:
        rem = "" if r.get("remaining") is None else f"{round(100 * r['remaining']) + 0}%"
        t.add_row(r["checkpoint"], r["behaviour"], est(r["full_precision_base"]), est(r["quantized_base"]),
                  est(r["quantized_adapted"]), num(r["quantization_effect"]), num(r["adaptation_effect"]), rem)
    return t
