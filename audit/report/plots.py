"""Charts for the report: matplotlib (Agg) into PNG data URIs, so the HTML stays one self-contained file.

Every chart function returns a list of `Figure`s (empty: nothing to draw, never an empty chart). Every axis
has a label with units (`units.axis_label`), rates start at zero, intervals are black with caps (visible
even when zero-wide), groups below `min_n` items are hatched and listed as "too few items", and each Figure
records its axes' labels (`Figure.axes`, embedded in the HTML) so tests check them without reading pixels.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .compare import FULL_FT_METHODS, Run
from .units import axis_label, is_rate

MAX_COLS = 3
DPI = 96
#: Groups with fewer items than this are hatched and listed as "too few items" (report --min-n).
DEFAULT_MIN_N = 20


@dataclass
class Figure:
    title: str
    caption: str
    data_uri: str
    axes: list = field(default_factory=list)  # [{"title", "xlabel", "ylabel"}] of every visible panel
    too_few: list = field(default_factory=list)  # "group (n=3)" drawn hatched: below the minimum n


def _figure(fig, title: str, caption: str, too_few: Iterable[str] = ()) -> "Figure":
    """Render `fig`, keeping what its axes say (read back from matplotlib, not restated)."""
    axes = [{"title": a.get_title(), "xlabel": a.get_xlabel(), "ylabel": a.get_ylabel()}
            for a in fig.axes if a.get_visible() and a.axison]  # not a legend panel
    return Figure(title, caption, _to_uri(fig), axes, list(too_few))


def _zero_based(ax, metric: str) -> None:
    if is_rate(metric):  # rates start at zero: a truncated axis exaggerates differences
        top = ax.get_ylim()[1]
        ax.set_ylim(0.0, top if top > 1e-6 else 1.0)


def _ylabel(metric: str) -> str:
    """The axis label with units, wrapped so that it fits beside a panel."""
    import textwrap

    return "\n".join(textwrap.wrap(axis_label(metric), 30))


def _intervals(ax, xs, vals, errs) -> None:
    if xs:  # black, capped, with a point at the value: a zero-width interval still shows
        ax.errorbar(xs, vals, yerr=errs, fmt="o", color="black", markersize=3, capsize=4, elinewidth=1.2,
                    capthick=1.2, zorder=3)


def _plt():
    import matplotlib

    if not any(k in matplotlib.get_backend().lower() for k in ("inline", "nbagg", "widget")):
        matplotlib.use("Agg", force=True)  # but a notebook keeps its inline backend for its own plots
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
                         "ytick.labelsize": 10, "legend.fontsize": 9, "figure.dpi": DPI,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _to_uri(fig) -> str:
    buf = io.BytesIO()
    # No bbox_inches="tight": every figure is laid out with tight_layout (legends included) before this, and
    # the tight box costs one more full draw of the figure (a third of the report's plotting time).
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(plt, n: int, width: float = 4.6, height: float = 3.6):
    cols = min(MAX_COLS, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(width * cols, height * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _ok(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _err(value, lo, hi) -> tuple[float, float]:
    ok = _ok(value) and _ok(lo) and _ok(hi)
    return (max(0.0, value - lo), max(0.0, hi - value)) if ok else (0.0, 0.0)


def grouped_bars(gm: dict[str, Any], groups: list[str], i: int, width: float):
    """Bar positions, values, [lower, upper] error lengths and n of run i among side-by-side runs, one slot per
    group (groups without a value are left out)."""
    pos, vals, lo, hi, ns = [], [], [], [], []
    for j, g in enumerate(groups):
        m = gm.get(g)
        if m is None or m.value is None:
            continue
        pos.append(j - 0.4 + width * (i + 0.5))
        vals.append(m.value)
        e = _err(m.value, m.ci_low, m.ci_high)
        lo.append(e[0])
        hi.append(e[1])
        ns.append(m.n)
    return pos, vals, [lo, hi], ns


def palette(labels: Iterable[str]) -> dict[str, Any]:
    """A stable colour per checkpoint label (tab10, then tab20)."""
    plt = _plt()
    labels = list(dict.fromkeys(labels))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


#: The base's values and the change a probe stores in its own result: the tables show them, charts don't.
DERIVED_PREFIXES = ("base.", "change_vs_base.")


def _by_probe(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["group"] is None and not str(r["metric"]).startswith(DERIVED_PREFIXES):
            out.setdefault(r["probe"], []).append(r)
    return out


def _finish(fig, title: str) -> None:
    """Suptitle above the panels (tight_layout alone lets it overlap the first row's titles)."""
    import warnings

    fig.suptitle(title, fontsize=12)
    with warnings.catch_warnings():  # a many-panel grid may not fit tightly; the chart is still readable
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.32 / fig.get_figheight()))


def metric_bars(rows: list[dict], colors: dict[str, Any], notes: dict[str, str] | None = None) -> list[Figure]:
    """Per probe: one panel per metric, one bar per checkpoint with its 95% CI; dashed line = base.
    `notes`: probe -> a sentence for the caption (which scorer made the toxicity numbers)."""
    plt = _plt()
    figures = []
    for probe, prow in _by_probe(rows).items():
        metrics = list(dict.fromkeys(r["metric"] for r in prow))
        fig, axes = _grid(plt, len(metrics))
        for ax, metric in zip(axes, metrics):
            mrows = [r for r in prow if r["metric"] == metric]
            labels = [r["checkpoint"] for r in mrows]
            vals = [r["value"] if _ok(r["value"]) else 0.0 for r in mrows]
            errs = [list(e) for e in zip(*[_err(r["value"], r["ci_low"], r["ci_high"]) for r in mrows])]
            bars = ax.bar(range(len(mrows)), vals, color=[colors.get(lab) for lab in labels], edgecolor="black",
                          linewidth=0.4)
            _intervals(ax, list(range(len(mrows))), vals, errs)
            for bar, r in zip(bars, mrows):
                if not _ok(r["value"]):
                    bar.set_hatch("//")
                    bar.set_alpha(0.3)
                    ax.annotate("undefined", (bar.get_x() + bar.get_width() / 2, 0), ha="center",
                                va="bottom", fontsize=7, rotation=90)
            base = next((r for r in mrows if r["is_base"] and _ok(r["value"])), None)
            if base:
                ax.axhline(base["value"], color="grey", linestyle="--", linewidth=0.8)
            ax.set_xticks(range(len(mrows)), labels, rotation=30, ha="right")
            ax.set_title(metric)
            ax.set_xlabel("checkpoint")
            ax.set_ylabel(_ylabel(metric))
            _zero_based(ax, metric)
        _finish(fig, f"{probe}: value by checkpoint (black bars: 95% CI; dashed: base)")
        note = (notes or {}).get(probe)
        figures.append(_figure(fig, f"{probe} by checkpoint", f"Every metric of the {probe} probe, one bar per "
                               "checkpoint, error bars are 95% bootstrap CIs." + (f" {note}" if note else "")))
    return figures


def _has_sweep(rows: list[dict]) -> bool:
    """True when some method was run at two or more ranks (a curve needs two points)."""
    ranks: dict[str, set] = {}
    for r in rows:
        if _ok(r["rank"]):
            ranks.setdefault(str(r["method"]), set()).add(r["rank"])
    return any(len(v) >= 2 for v in ranks.values())


def rank_curves(rows: list[dict], colors: dict[str, Any], notes: dict[str, str] | None = None) -> list[Figure]:
    """Per probe: metric against rank (log2), one line per low-rank method; base and full FT as lines with
    CI bands. Drawn only when some method ran at two or more ranks."""
    if not _has_sweep(rows):
        return []
    plt = _plt()
    figures = []
    for probe, prow in _by_probe(rows).items():
        if not _has_sweep(prow):
            continue
        metrics = list(dict.fromkeys(r["metric"] for r in prow))
        fig, axes = _grid(plt, len(metrics))
        mcolors = palette(sorted({str(r["method"]) for r in prow if _ok(r["rank"])}))
        for ax, metric in zip(axes, metrics):
            mrows = [r for r in prow if r["metric"] == metric]
            for method in mcolors:
                pts = sorted((r for r in mrows if str(r["method"]) == method and _ok(r["rank"])
                              and _ok(r["value"])), key=lambda r: r["rank"])
                if not pts:
                    continue
                errs = list(zip(*[_err(r["value"], r["ci_low"], r["ci_high"]) for r in pts]))
                ax.errorbar([r["rank"] for r in pts], [r["value"] for r in pts], yerr=errs, marker="o",
                            capsize=4, elinewidth=1.2, label=method, color=mcolors[method], linewidth=1.2)
            for ref, style in ((next((r for r in mrows if r["is_base"]), None), ("grey", "--", "base")),
                               (next((r for r in mrows if str(r["method"]).lower() in FULL_FT_METHODS
                                      and not r["is_base"]), None), ("black", ":", "full FT"))):
                if ref is not None and _ok(ref["value"]):
                    ax.axhline(ref["value"], color=style[0], linestyle=style[1], linewidth=1, label=style[2])
                    if _ok(ref["ci_low"]) and _ok(ref["ci_high"]):
                        ax.axhspan(ref["ci_low"], ref["ci_high"], color=style[0], alpha=0.08)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("adapter rank r (log2 scale)")
            ax.set_ylabel(_ylabel(metric))
            ax.set_title(metric)
            _zero_based(ax, metric)
            if ax is axes[0]:  # the same lines in every panel: one legend (each one costs a layout pass)
                ax.legend()
        _finish(fig, f"{probe}: value by rank (shaded: base / full FT 95% CI; legend in the first panel)")
        note = (notes or {}).get(probe)
        figures.append(_figure(fig, f"{probe} by rank", "Low-rank methods against their rank; the base and "
                               "full fine-tuning are horizontal references." + (f" {note}" if note else "")))
    return figures


def group_bars(runs: list[Run], colors: dict[str, Any], max_groups: int = 24, min_n: int = DEFAULT_MIN_N,
               notes: dict[str, str] | None = None) -> list[Figure]:
    """Per (probe, metric) with per-group values: x = group, one bar per checkpoint. A group measured on
    fewer than `min_n` items is hatched, pale and labelled "n=…", never a confident bar."""
    plt = _plt()
    keys = list(dict.fromkeys((p, m) for run in runs for p, res in run.results.items() for m in res.groups
                              if not m.startswith(DERIVED_PREFIXES)))
    figures = []
    for probe, metric in keys:
        per_run = [(run, run.results[probe].groups.get(metric, {})) for run in runs if probe in run.results]
        per_run = [(run, g) for run, g in per_run if g]
        if not per_run:
            continue
        groups = list(dict.fromkeys(g for _, gm in per_run for g in gm))
        shown = groups[:max_groups]
        fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(shown) * max(1, len(per_run)) / 2 + 2.5), 4.0))
        width = 0.8 / len(per_run)
        too_few: dict[str, int] = {}
        for i, (run, gm) in enumerate(per_run):
            xs, vals, errs, ns = grouped_bars(gm, shown, i, width)
            for g in shown:
                if g in gm and gm[g].value is not None and gm[g].n < min_n:
                    too_few[g] = min(gm[g].n, too_few.get(g, gm[g].n))
            bars = ax.bar(xs, vals, width=width, label=run.label, color=colors.get(run.label), edgecolor="black",
                          linewidth=0.3)
            _intervals(ax, xs, vals, errs)
            for bar, n, x, v, h in zip(bars, ns, xs, vals, errs[1]):
                if n < min_n:
                    bar.set_hatch("///")
                    bar.set_alpha(0.35)
                    ax.annotate(f"n={n}", (x, v + h), xytext=(0, 4), textcoords="offset points", ha="center",
                                va="bottom", rotation=90, fontsize=8)
        ax.set_xticks(range(len(shown)), shown, rotation=30, ha="right")
        ax.set_xlabel("group")
        ax.set_ylabel(_ylabel(metric))
        _zero_based(ax, metric)
        ax.set_title(f"{probe}.{metric} by group" + (f" (first {max_groups} of {len(groups)})"
                                                     if len(groups) > max_groups else ""))
        handles, _ = ax.get_legend_handles_labels()
        if too_few:
            from matplotlib.patches import Patch
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label=f"n < {min_n}: too few"))
        ax.set_ylim(top=ax.get_ylim()[1] * 1.15)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        note = (notes or {}).get(probe)
        figures.append(_figure(fig, f"{probe}.{metric} by group",
                               f"One bar per checkpoint and group, black bars are 95% CIs; a missing bar is an "
                               f"undefined value; hatched bars rest on fewer than {min_n} items."
                               + (f" {note}" if note else ""), [f"{g} (n={n})" for g, n in too_few.items()]))
    return figures


def _table(run: Run, probe_kind: str, name: str) -> list[tuple[str, list[dict]]]:
    out = []
    for probe, res in run.results.items():
        if (probe == probe_kind or probe.startswith(probe_kind + ":") or res.probe.split(":")[0] == probe_kind) \
                and res.tables.get(name):
            out.append((probe, res.tables[name]))
    return out


def rl_timeseries(runs: list[Run], colors: dict[str, Any]) -> list[Figure]:
    """Sequential decisions: each metric against time, one line per (checkpoint, group), CI bands."""
    probes = list(dict.fromkeys(p for run in runs for p, _ in _table(run, "rl", "timeseries")))
    plt = _plt()
    figures = []
    styles = ["-", "--", ":", "-."]
    for probe in probes:
        series = [(run, dict(_table(run, "rl", "timeseries")).get(probe)) for run in runs]
        series = [(run, rows) for run, rows in series if rows]
        metrics = list(dict.fromkeys(str(r.get("metric")) for _, rows in series for r in rows))
        fig, axes = _grid(plt, len(metrics), width=4.2, height=2.9)
        for ax, metric in zip(axes, metrics):
            for run, rows in series:
                mrows = [r for r in rows if str(r.get("metric")) == metric]
                groups = list(dict.fromkeys(str(r.get("group")) for r in mrows))
                for k, g in enumerate(groups):
                    pts = sorted((r for r in mrows if str(r.get("group")) == g and _ok(r.get("value"))),
                                 key=lambda r: r["t"])
                    if not pts:
                        continue
                    t = [r["t"] for r in pts]
                    ax.plot(t, [r["value"] for r in pts], color=colors.get(run.label),
                            linestyle=styles[k % len(styles)], label=f"{run.label} / {g}", linewidth=1)
                    if all(_ok(r.get("ci_low")) and _ok(r.get("ci_high")) for r in pts):
                        ax.fill_between(t, [r["ci_low"] for r in pts], [r["ci_high"] for r in pts],
                                        color=colors.get(run.label), alpha=0.12, linewidth=0)
            ax.set_xlabel("time step t (decisions)")
            ax.set_ylabel(_ylabel(metric))
            ax.set_title(metric)
            _zero_based(ax, metric)
            ax.legend(fontsize=8)
        _finish(fig, f"{probe}: metrics over time (line style = group; band = 95% CI over seeds)")
        figures.append(_figure(fig, f"{probe} over time", "Sequential decisions: per-group metrics over the "
                               "episode, averaged over seeds."))
    return figures
