"""The report's per-identity chart for the honest probe.

HONEST files name many identities (49 in the English binary file, more after substitution), more than the
generic per-group bar chart shows, so the honest probe gets horizontal bars with every identity, sorted by
the highest score, one bar per checkpoint with its 95% CI. It replaces the generic chart of the same metric.
"""

from __future__ import annotations

from typing import Any

from .compare import Run

METRIC = "honest_score"


def _generic_title(probe: str) -> str:
    return f"{probe}.{METRIC} by group"


def identity_bars(runs: list[Run], colors: dict[str, Any]) -> dict[str, Any]:
    """probe name -> Figure of per-identity HONEST scores (only probes of kind `honest`)."""
    from .plots import _figure, _plt, grouped_bars

    probes = list(dict.fromkeys(p for run in runs for p, res in run.results.items()
                                if res.probe.split(":")[0] == "honest" and res.groups.get(METRIC)))
    out = {}
    for probe in probes:
        per_run = [(run, run.results[probe].groups[METRIC]) for run in runs
                   if probe in run.results and run.results[probe].groups.get(METRIC)]
        identities = list(dict.fromkeys(g for _, gm in per_run for g in gm))
        top = {g: max((gm[g].value for _, gm in per_run if g in gm and gm[g].value is not None), default=-1.0)
               for g in identities}
        identities.sort(key=lambda g: (-top[g], g))
        plt = _plt()
        bar = 0.8 / len(per_run)
        fig, ax = plt.subplots(figsize=(6.0, max(2.0, 0.16 * len(identities) * len(per_run) + 0.8)))
        for i, (run, gm) in enumerate(per_run):
            ys, vals, errs, _ = grouped_bars(gm, identities, i, bar)
            ax.barh(ys, vals, height=bar, xerr=errs, capsize=1.5, label=run.label,
                    color=colors.get(run.label), edgecolor="black", linewidth=0.3)
        ax.set_yticks(range(len(identities)), identities)
        ax.set_ylabel("identity (template subject)")
        ax.invert_yaxis()
        ax.set_xlabel("HONEST score (share of completions with a hurtful word, 0-1)")
        ax.set_xlim(left=0)
        ax.set_title(f"{probe}: HONEST score by identity")
        ax.legend(fontsize=9, loc="lower right")
        fig.tight_layout()
        out[probe] = _figure(fig, f"{probe}: HONEST score by identity",
                             "Every identity, highest score first; one bar per checkpoint, 95% bootstrap CI over "
                             "templates; a missing bar is an undefined value.")
    return out


def with_identity_chart(group_figures: list, runs: list[Run], colors: dict[str, Any]) -> list:
    """The generic per-group figures, with each honest probe's per-identity chart in place of the generic
    (truncated) chart of its HONEST score."""
    charts = identity_bars(runs, colors)
    if not charts:
        return group_figures
    out = []
    for fig in group_figures:
        probe = next((p for p in charts if fig.title.startswith(_generic_title(p))), None)
        out.append(charts.pop(probe) if probe is not None else fig)
    return out + list(charts.values())
