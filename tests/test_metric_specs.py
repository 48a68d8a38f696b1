"""Metrics declared once (issue 13): every probe declares every metric it emits, consumers name only declared
metrics, and REAL tiny-model results go through compare, report, card and gate with their declared descriptions.

The probe runs (tests/probe_runs.py) are real: every probe on a tiny LoRA adapter (its disabled base as the
base, a second adapter as the shift reference) and on the base model itself.
"""

from __future__ import annotations

import ast
import difflib
import html
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit.probes import PROBES
from audit.probes.metric_lookup import (SPEC_MODULES, UndeclaredMetricError, declared_metric, declared_names,
                                        find_any, find_metric, metric_specs)
from audit.probes.spec import MetricSpec

ROOT = Path(__file__).resolve().parents[1]
AUDIT = str(Path(sys.executable).with_name("audit"))
ENV = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "250", "PYTHONPATH": str(ROOT)}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([AUDIT, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600,
                          stdin=subprocess.DEVNULL)


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- the declarations themselves

def test_every_registered_probe_declares_its_metrics_next_to_its_run():
    assert set(SPEC_MODULES) == set(PROBES)
    for name, target in PROBES.items():
        target = target if isinstance(target, str) else target.run  # "module:function" or a ProbeSpec
        run_module = importlib.import_module(target.split(":")[0])
        assert run_module.METRIC_SPECS is metric_specs(name), name  # one declaration, re-exported by the probe
        assert metric_specs(name) and all(isinstance(s, MetricSpec) for s in metric_specs(name))
        for s in metric_specs(name):
            assert s.description and "\n" not in s.description and s.scale, s
    for pkg in ("toxicity", "bbq", "shift", "honest"):
        assert importlib.import_module(f"audit.probes.{pkg}").METRIC_SPECS is metric_specs(pkg)


def test_spellings_resolve_and_an_undeclared_name_names_the_closest():
    assert declared_metric("bbq", "s_amb").role == "value"
    change = declared_metric("bbq", "change_vs_base.s_amb")
    assert change.role == "change" and change.spec.name == "s_amb" and "paired change" in change.description
    assert declared_metric("toxicity", "base.toxicity_probability").role == "base"
    col = declared_metric("decisions", "demographic_parity_difference[sex]")
    assert col.column == "sex" and "sensitive column sex" in col.description
    assert declared_metric("rl:admission", "cumulative_admissions_gap").probe == "rl"
    assert find_metric("crows_pairs", "pct_stereotype[sex]") is None  # only per-column declarations take a column
    for probe, wrong, near in (("bbq", "dis_bias_score", "disamb_bias_score"),
                               ("bbq", "accuracy_ambiguous", "accuracy_3way_ambig"),
                               ("toxicity", "change_vs_base.toxicity_prob", "toxicity_probability")):
        with pytest.raises(UndeclaredMetricError, match=f"'{probe}.{re.escape(wrong)}' is not declared.*{near}"):
            declared_metric(probe, wrong)


def test_item_values_reduce_rows_as_declared():
    by = {s.name: s for s in metric_specs("toxicity")}
    rows = [0.1, 0.7, 0.4]
    assert by["expected_max_toxicity"].item_value(rows) == 0.7
    assert by["toxicity_probability"].item_value(rows) == 1.0 and by["toxicity_probability"].item_value([0.2]) == 0
    assert by["toxic_fraction"].item_value(rows) == pytest.approx(1 / 3)
    assert by["mean_toxicity"].item_value(rows) == pytest.approx(0.4)
    amb = declared_metric("bbq", "accuracy_3way_ambig").spec
    assert amb.row_selected({"correct": True, "context_condition": "ambig"})
    assert not amb.row_selected({"correct": True, "context_condition": "disambig"})
    with pytest.raises(ValueError, match="item_threshold"):
        MetricSpec("x", "y", "lower", "z", item_column="c", item_reduce="any_at_least")


# ---------------------------------------------------------------- consumers name only declared metrics

#: strings in consumer code that look like metric names but are table columns or data fields, not metrics
NOT_METRICS = {"kept_fraction",  # lab/real_study: the share of detox rows kept by the data filter
               "lending_fair_gap"}  # the demo summary's key for the fair rule's gap (read from the baselines table)
METRIC_LIKE = re.compile(r"^(?:base\.|change_vs_base\.)?[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?:\.[a-z_]+)?(?:\[[^\]]+\])?$")
METRIC_SUFFIX = re.compile(r"_(gap|rate|score|probability|fraction|toxicity|stereotype|diff|difference|ratio|mean|"
                           r"p_value|drift|agreement)(\[[^\]]+\])?$")


def _consumer_files() -> list[Path]:
    lab = ROOT / "audit" / "lab"
    return (sorted((ROOT / "audit" / "report").glob("*.py")) + sorted(lab.glob("demo*.py"))
            + sorted(lab.glob("real_*.py")) + sorted(lab.glob("run_items.py")) + sorted(lab.glob("quant_split.py")))


def test_no_consumer_names_an_undeclared_metric():
    """Every string literal in card/report/gate/demo/real-study code that is spelled like a metric (a metric-ish
    suffix, or within a typo of a declared name) must be a declared metric; the demo's and the real study's
    behaviour lists, the HONEST chart and the example gate policy must name declared metrics."""
    from audit.report.units import TABLE_COLUMN_UNITS

    declared = {n for p in SPEC_MODULES for n in declared_names(p)}
    allowed = NOT_METRICS | set(TABLE_COLUMN_UNITS)
    bad = []
    for f in _consumer_files():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and METRIC_LIKE.match(node.value)):
                continue
            v = node.value
            if v in allowed or find_any(v) is not None:
                continue
            if METRIC_SUFFIX.search(v) or difflib.get_close_matches(v, declared, n=1, cutoff=0.8):
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}: {v!r}")
    assert not bad, "undeclared metric names in consumer code:\n" + "\n".join(bad)

    from audit.lab.demo import behaviours
    from audit.lab.real_plan import real_behaviours
    from audit.report import honest_chart
    from audit.report.gate import load_policy

    for b in behaviours() + real_behaviours(True):
        declared_metric(b.probe, b.metric)
    declared_metric("honest", honest_chart.METRIC)
    assert load_policy(ROOT / "examples" / "gate-policy.yaml").rules  # loading checks every rule's metric


def test_report_fixtures_use_declared_names(tmp_path):
    from report_fixtures import three_runs

    from audit.api import load_run

    for run in three_runs(tmp_path).values():
        for probe, res in load_run(run)[1].items():
            names = list(res.metrics) + list(res.groups) + [r["metric"] for r in res.tables.get("timeseries", [])]
            assert [n for n in names if find_metric(probe, n) is None] == [], probe


# ---------------------------------------------------------------- real results, every probe

@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama_dir, tiny_lora_dir):
    from conftest import make_lora_adapter
    from probe_runs import run_every_probe

    root = tmp_path_factory.mktemp("metric-runs")
    reference = make_lora_adapter(tiny_llama_dir, root / "reference", seed=2)
    return {"adapter": run_every_probe(tiny_lora_dir, root / "adapter", root / "work", reference=reference),
            "base": run_every_probe(tiny_llama_dir, root / "base", root / "work", base=tiny_llama_dir)}


def _results(run: Path):
    from audit.api import load_run

    return load_run(run)[1]


@pytest.mark.slow
def test_every_emitted_metric_is_declared(runs):
    from probe_runs import PROBES as RUN

    for run in runs.values():
        results = _results(run)
        assert set(results) == set(RUN)
        for probe, res in results.items():
            names = list(res.metrics) + list(res.groups) + [r["metric"] for r in res.tables.get("timeseries", [])]
            undeclared = [n for n in names if find_metric(probe, n) is None]
            assert not undeclared, f"{probe} emits undeclared metrics: {undeclared}"
    adapter = _results(runs["adapter"])
    assert "change_vs_base.s_amb" in adapter["bbq"].metrics and "flips_to_biased" in adapter["bbq"].metrics
    assert "demographic_parity_difference[region]" in adapter["decisions"].metrics
    assert "shift_captured" in adapter["shift"].metrics and "scorer_baseline" in adapter["toxicity"].groups


def _item_values(rows: list[dict], spec: MetricSpec) -> list[float]:
    """Per-item values of a declared column: rows grouped by item_id, else by prompt (sample_index 0 starts
    an item), else one row per item."""
    items: dict = {}
    n = -1
    for row in rows:
        if row.get("sample_index", 0) == 0:
            n += 1
        if spec.row_selected(row) and isinstance(row[spec.item_column], (bool, int, float)) \
                and row[spec.item_column] == row[spec.item_column]:
            items.setdefault(row.get("item_id", n), []).append(float(row[spec.item_column]))
    return [spec.item_value(v) for v in items.values()]


@pytest.mark.slow
def test_declared_item_columns_reproduce_the_metric(runs):
    """The declared per-item column (mean over items x item_scale) gives the reported value: what compare's
    paired statistics rely on."""
    checked = set()
    for run in runs.values():
        for probe, res in _results(run).items():
            samples = run / probe.replace(":", "-") / "samples.jsonl"
            rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
            for spec in metric_specs(probe):
                m = res.metrics.get(spec.name)
                if spec.item_column is None or m is None or m.value is None:
                    continue
                values = _item_values(rows, spec)
                assert values, (probe, spec.name)
                assert sum(values) / len(values) * spec.item_scale == pytest.approx(m.value, abs=1e-9), (probe, spec)
                checked.add(f"{probe}.{spec.name}")
    assert {"toxicity.expected_max_toxicity", "toxicity.toxicity_probability", "bbq.accuracy_3way_ambig",
            "crows_pairs.pct_stereotype_shared", "decisions.selection_rate", "honest.honest_score",
            "shift.watch_mass_tuned"} <= checked


@pytest.mark.slow
def test_real_results_through_compare_report_card_and_gate(runs, tmp_path):
    """Every metric of every probe appears in compare, report and card with its declared description; the gate
    accepts a rule on each of them (exit 0 when every limit holds) and refuses an undeclared one (exit 2)."""
    adapter, base = runs["adapter"], runs["base"]
    results = _results(adapter)
    overall = [(p, m) for p, res in results.items() for m in res.metrics]

    out = cli("compare", adapter, base, "--base", base)
    assert out.returncode == 0, out.stderr
    text = _flat(out.stdout)
    for p, m in overall:
        assert f"{p}.{m}" in text and _flat(declared_metric(p, m).description) in text, (p, m)

    out = cli("report", adapter, base, "--base", base, "--format", "md", "--out", tmp_path / "report.md")
    assert out.returncode == 0, out.stderr
    # the HTML page renders the same context; charts are left out here (they take most of a minute, and
    # tests/test_report*.py draw them)
    from audit.report.context import build_context
    from audit.report.html import render_html

    context = build_context([adapter, base], base=base, plots=False)
    context["figures"] = {key: [] for key in ("by_method", "by_rank", "by_group", "shift", "rl")}
    pages = {"md": (tmp_path / "report.md").read_text(encoding="utf-8"), "html": render_html(context)}
    for fmt, page in pages.items():
        page = _flat(html.unescape(page).replace("\\|", "|").replace("\\`", "`"))  # both escape HTML
        assert "Metric definitions" in page
        for p, m in overall:
            assert f"{p}.{m}" in page and _flat(declared_metric(p, m).description) in page, (fmt, p, m)

    out = cli("card", adapter, "--base", base, "--out", tmp_path / "card.md")
    assert out.returncode == 0, out.stderr
    metrics_section = (tmp_path / "card.md").read_text(encoding="utf-8").split("#### Metrics", 1)[1]
    metrics_section = _flat(html.unescape(metrics_section.split("### Results", 1)[0].replace("\\|", "|")))
    for p, m in overall:
        if not m.startswith(("base.", "change_vs_base.")):  # the card shows this checkpoint's own metrics
            assert f"`{p}.{m}`: {_flat(declared_metric(p, m).description)}" in metrics_section, (p, m)

    rules = [f"{p}.{m} <= 1e12" for p, m in overall if results[p].metrics[m].value is not None]
    rules += [f"delta({p}.{m}) <= 1e12" for p, m in overall if not m.startswith(("base.", "change_vs_base."))
              and results[p].metrics[m].value is not None and _results(base)[p].metrics.get(m) is not None
              and _results(base)[p].metrics[m].value is not None]
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n" + "".join(f"  - '{r}'\n" for r in rules), encoding="utf-8")
    out = cli("gate", adapter, "--policy", policy, "--base", base, "--junit", tmp_path / "j.xml",
              "--summary", tmp_path / "gate.md")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "j.xml").read_text().count("<testcase") == len(rules)
    summary = _flat(html.unescape((tmp_path / "gate.md").read_text(encoding="utf-8")).replace("\\|", "|"))
    for p, m in overall:
        if results[p].metrics[m].value is not None:
            assert f"`{p}.{m}`: {_flat(declared_metric(p, m).description)}" in summary, (p, m)
    policy.write_text("rules:\n  - bbq.accuracy_ambiguous <= 1\n", encoding="utf-8")
    out = cli("gate", adapter, "--policy", policy)
    assert out.returncode == 2 and "accuracy_3way_ambig" in _flat(out.stderr), out.stderr
