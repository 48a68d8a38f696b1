"""What a reviewer sees first: verdicts (and the gate) before any table, labelled axes, no confident bar
for a group measured on a handful of items, and the scorer named next to toxicity numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from audit.report.html import write_report
from report_fixtures import three_runs

AUDIT = str(Path(sys.executable).parent / "audit")


class Outline(HTMLParser):
    """Start tags in document order, with attributes, plus the text of every table's header cells."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.events: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._th: list[str] | None = None
        self.headers: dict[str, list[str]] = {}
        self._table_id: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.events.append((tag, a))
        if tag == "table":
            self._table_id = a.get("id")
            self.headers.setdefault(self._table_id or f"table{len(self.headers)}", [])
        if tag == "th":
            self._th = []

    def handle_endtag(self, tag):
        if tag == "th" and self._th is not None:
            key = self._table_id or f"table{len(self.headers) - 1}"
            self.headers[key].append("".join(self._th).strip())
            self._th = None

    def handle_data(self, data):
        self.text.append(data)
        if self._th is not None:
            self._th.append(data)


def _index(events, pred) -> int:
    return next(i for i, (tag, a) in enumerate(events) if pred(tag, a))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = three_runs(tmp_path_factory.mktemp("runs"))
    # one group measured on a single prompt, as a real prompt set can have: it must not look confident
    f = runs["lora-r4"] / "toxicity" / "result.json"
    data = json.loads(f.read_text())
    data["groups"]["toxicity_probability"]["loner"] = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 1}
    f.write_text(json.dumps(data))
    return runs


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    out = write_report([runs["base"], runs["full-ft"], runs["lora-r4"]],
                       tmp_path_factory.mktemp("html") / "r.html", min_n=10)
    p = Outline()
    p.feed(out.read_text(encoding="utf-8"))
    return p


def test_verdicts_come_before_the_first_table_and_verdict_column_first(page):
    ev = page.events
    assert _index(ev, lambda t, a: a.get("id") == "verdict") < _index(ev, lambda t, a: t == "table")
    text = " ".join(page.text)
    assert "lora-r4: KEEPS" in text and "full-ft: REFERENCE" in text and "base: BASE" in text
    assert page.headers["summary-table"][0] == "verdict"


def test_every_figure_has_labelled_axes(page):
    figures = [a for t, a in page.events if t == "figure"]
    assert len(figures) >= 6
    for fig in figures:
        axes = json.loads(fig["data-axes"])
        assert axes, fig
        for ax in axes:
            assert ax["xlabel"].strip() and ax["ylabel"].strip(), ax
    ylabels = {ax["ylabel"].replace("\n", " ") for fig in figures for ax in json.loads(fig["data-axes"])}
    assert "toxicity probability, share of prompts (0-1)" in ylabels  # name and scale as the probe declares them


def test_group_below_min_n_is_marked_too_few(page):
    text = " ".join(page.text)
    assert "Too few items (fewer than 10), drawn hatched: loner (n=1)." in text
    assert "women (n=" not in text  # groups with 12 items are drawn normally at min_n=10


def test_scorer_is_named_next_to_toxicity_numbers(page):
    text = " ".join(page.text)
    assert "toxicity numbers are scored by profanity (1.9.1" in text and "known limits:" in text
    assert text.count("scorer: profanity") >= 8  # summary and all-metrics rows of toxicity metrics


@pytest.mark.slow
def test_report_cli_with_policy_shows_the_gate_first(runs, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - toxicity.toxicity_probability <= 0.3\n")
    out = tmp_path / "gated.html"
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.run([AUDIT, "report", str(runs["base"]), str(runs["full-ft"]), str(runs["lora-r4"]),
                           "--policy", str(policy), "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    p = Outline()
    p.feed(out.read_text(encoding="utf-8"))
    text = " ".join(" ".join(p.text).split())
    assert "FAILED 1 of 2 checkpoints fail" in text
    first_table = _index(p.events, lambda t, a: t == "table")
    gates = [i for i, (t, a) in enumerate(p.events) if t == "span" and "gate" in a.get("class", "").split()]
    assert gates and max(gates) < first_table


def test_report_of_runs_without_a_toxicity_probe(runs, tmp_path):
    import shutil

    run = Path(shutil.copytree(runs["base"], tmp_path / "no-toxicity"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["probes"] = [p for p in manifest["probes"] if p != "toxicity"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    html = write_report([run], tmp_path / "r.html").read_text()
    assert "scored by" not in html and "bbq" in html
