"""The demo's chart: one panel per planted behaviour, every checkpoint's value with its 95% CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_summary(summary: dict[str, Any], path: str | Path) -> Path:
    """One panel per planted behaviour: every checkpoint's value with its 95% CI, base and full FT as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import textwrap

    from ..report.units import axis_label, is_rate

    names = [b["name"] for b in summary["behaviours"]]
    labels = summary["checkpoints"]
    by = {(r["checkpoint"], r["behaviour"]): r for r in summary["rows"]}
    fig, axes = plt.subplots(len(names), 1, figsize=(max(6.0, 0.55 * len(labels) + 2), 2.8 * len(names)),
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        xs, ys, lo, hi, colors = [], [], [], [], []
        for i, label in enumerate(labels):
            r = by.get((label, name))
            if not r or r.get("value") is None:
                continue
            v = r["value"]
            xs.append(i)
            ys.append(v)
            # clipped at 0: a bootstrap interval need not contain the point estimate (e.g. averaged CIs)
            lo.append(max(0.0, v - r["ci_low"]) if r.get("ci_low") is not None else 0.0)
            hi.append(max(0.0, r["ci_high"] - v) if r.get("ci_high") is not None else 0.0)
            colors.append("#888888" if label == "base" else "#1f77b4" if label == summary["reference"] else "#ff7f0e")
        ax.bar(xs, ys, color=colors)
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color="black", markersize=3, capsize=4, elinewidth=1.2)
        for label, style in (("base", ":"), (summary["reference"], "--")):
            r = by.get((label, name))
            if r and r.get("value") is not None:
                ax.axhline(r["value"], linestyle=style, color="black", linewidth=0.8)
        metric = next((r["metric"] for r in summary["rows"] if r["behaviour"] == name), name)
        ax.set_title(name, fontsize=11)
        ax.set_ylabel("\n".join(textwrap.wrap(axis_label(metric), 24)), fontsize=9)
        if is_rate(metric) and min(ys, default=0.0) >= 0:  # a gap can go negative
            ax.set_ylim(0.0, max(ax.get_ylim()[1], 1e-9))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
    axes[-1, 0].set_xlabel("checkpoint", fontsize=10)
    what = summary.get("title", "audit demo: planted behaviour per checkpoint")
    fig.suptitle(f"{what}\n(dotted: base, dashed: full FT; black bars: 95% CI)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
