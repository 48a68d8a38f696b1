"""Charts of the shift probe: logit lens, divergence per corpus slice, weight change per layer.

Same conventions as `plots` (labelled axes with units, rates from zero, `Figure.axes` recorded).
"""

from __future__ import annotations

from typing import Any

from .compare import Run
from .plots import Figure, _figure, _finish, _grid, _ok, _plt, _table, _ylabel, _zero_based


def logit_lens(runs: list[Run], colors: dict[str, Any]) -> list[Figure]:
    """Logit lens: per layer, KL to the final layer and watch-list mass, one line per (checkpoint, model)."""
    series = [(run, rows) for run in runs for _, rows in _table(run, "shift", "logit_lens")]
    if not series:
        return []
    plt = _plt()
    cols = [c for c in ("kl_to_final", "watch_mass") if any(c in r for _, rows in series for r in rows)]
    if not cols:
        return []
    n_lines = sum(len({str(r.get("model")) for r in rows}) for _, rows in series)
    ncol = 1 if n_lines <= 12 else 2
    # one legend, in a panel of its own: one per axis covered the curves once a run had a few checkpoints
    fig, panels = _grid(plt, len(cols) + 1, width=4.6, height=max(3.0, 0.22 * -(-n_lines // ncol) + 0.6))
    axes, legend_panel = panels[:-1], panels[-1]
    styles = ["-", "--", ":", "-."]
    for ax, col in zip(axes, cols):
        for run, rows in series:
            models = list(dict.fromkeys(str(r.get("model")) for r in rows))
            for k, model in enumerate(models):
                pts = sorted(((r["layer"], r[col]) for r in rows if str(r.get("model")) == model
                              and _ok(r.get(col)) and _ok(r.get("layer"))))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", color=colors.get(run.label),
                            linestyle=styles[k % len(styles)], label=f"{run.label} / {model}")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(_ylabel(col))
        ax.set_title(col)
        _zero_based(ax, col)
    legend_panel.axis("off")
    legend_panel.legend(*axes[0].get_legend_handles_labels(), loc="center", ncol=ncol, frameon=False)
    _finish(fig, "Logit lens (line style = which model inside the run)")
    return [_figure(fig, "Logit lens", "Each layer's hidden state projected through the final norm and the "
                    "unembedding: KL to the model's own final distribution and probability mass on the watch "
                    "list.")]


def divergence_by_slice(runs: list[Run], colors: dict[str, Any]) -> list[Figure]:
    """Bars of every numeric divergence column per corpus slice, one bar per checkpoint."""
    series = [(run, rows) for run in runs for _, rows in _table(run, "shift", "divergence_by_slice")]
    if not series:
        return []
    plt = _plt()
    cols = [c for c in dict.fromkeys(k for _, rows in series for r in rows for k in r)
            if c != "slice" and all(isinstance(r.get(c), (int, float)) or r.get(c) is None
                                    for _, rows in series for r in rows)
            and any(_ok(r.get(c)) for _, rows in series for r in rows)][:6]
    if not cols:
        return []
    slices = list(dict.fromkeys(str(r.get("slice")) for _, rows in series for r in rows))
    fig, axes = _grid(plt, len(cols))
    width = 0.8 / len(series)
    for ax, col in zip(axes, cols):
        for i, (run, rows) in enumerate(series):
            by = {str(r.get("slice")): r.get(col) for r in rows}
            xs = [j - 0.4 + width * (i + 0.5) for j, s in enumerate(slices) if _ok(by.get(s))]
            ax.bar(xs, [by[s] for s in slices if _ok(by.get(s))], width=width, label=run.label,
                   color=colors.get(run.label), edgecolor="black", linewidth=0.3)
        ax.set_xticks(range(len(slices)), slices, rotation=30, ha="right")
        ax.set_xlabel("corpus slice")
        ax.set_ylabel(_ylabel(col))
        ax.set_title(col)
        ax.legend()
    _finish(fig, "Divergence by corpus slice")
    return [_figure(fig, "KL by slice", "Per-token divergence summaries per corpus slice.")]


def weight_delta(runs: list[Run], colors: dict[str, Any]) -> list[Figure]:
    """Per layer: Frobenius norm and effective rank of W_tuned - W_base (mean over modules)."""
    series = [(run, rows) for run in runs for _, rows in _table(run, "shift", "weight_delta")]
    if not series:
        return []
    plt = _plt()
    cols = [c for c in ("fro_norm", "effective_rank") if any(_ok(r.get(c)) for _, rows in series for r in rows)]
    if not cols:
        return []
    fig, axes = _grid(plt, len(cols), width=4.6, height=3.0)
    for ax, col in zip(axes, cols):
        for run, rows in series:
            per_layer: dict[Any, list[float]] = {}
            for r in rows:
                if _ok(r.get(col)) and _ok(r.get("layer")):
                    per_layer.setdefault(r["layer"], []).append(float(r[col]))
            pts = sorted((k, sum(v) / len(v)) for k, v in per_layer.items())
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run.label,
                    color=colors.get(run.label))
        ax.set_xlabel("layer")
        ax.set_ylabel(_ylabel(col))
        ax.set_title(f"{col} of ΔW (mean over modules)")
        _zero_based(ax, col)
        ax.legend()
    fig.tight_layout()
    return [_figure(fig, "Weight change", "How far and in how many directions each layer's weights moved.")]
