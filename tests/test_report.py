"""audit report: one self-contained, escaped HTML file with its plots; the Markdown summary."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import pytest

from audit.errors import ConfigError
from audit.report.html import write_report
from report_fixtures import SCRIPT, make_run, three_runs

METRICS = ["expected_max_toxicity", "toxicity_probability", "mean_toxicity", "toxic_fraction", "accuracy_3way_ambig",
           "s_dis", "s_amb", "kl_base_tuned_mean", "selection_rate_gap"]


class Page(HTMLParser):
    """Collects what a browser would see: text, images, and anything that could reach the network."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.images: list[dict] = []
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href"):
            v = a.get(key)
            if v is not None and not (v.startswith("data:") or v.startswith("#")):
                self.external.append(f"{tag} {key}={v}")

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return three_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def html_report(runs, tmp_path_factory):
    """The three checkpoints plus a LoRA r=16, so that LoRA has a rank curve (two ranks)."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    r16 = make_run(out.parent / "lora16", "lora-r16", "lora", rank=16, steps=50, tox_scale=0.6, bbq_bias=0.06,
                   shift_strength=0.5, rl_gap=0.15, seed=6)
    write_report([runs["base"], runs["full-ft"], runs["lora-r4"], r16], out)
    return out


@pytest.fixture(scope="module")
def page(html_report):
    p = Page()
    p.feed(html_report.read_text(encoding="utf-8"))
    return p


def test_html_contains_every_checkpoint_and_metric(page):
    text = "\n".join(page.text)
    for label in ("base", "full-ft", "lora-r4", "lora-r16"):
        assert label in text
    for metric in METRICS:
        assert metric in text, metric
    assert "keeps base" in text and "How to read this" in text
    assert "overlaps the base run's CI but not the full fine-tuning run's CI" in text  # the rule is documented


def test_plots_are_embedded_pngs(page):
    alts = [img["alt"] for img in page.images]
    for expected in ("toxicity by checkpoint", "toxicity by rank", "toxicity.toxicity_probability by group",
                     "bbq.s_amb by group", "Logit lens", "KL by slice", "Weight change",
                     "rl:lending over time"):
        assert expected in alts, (expected, alts)
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_self_contained_and_model_text_escaped(page, html_report):
    raw = html_report.read_text(encoding="utf-8")
    assert page.external == []  # no CDN, no external script/stylesheet/image
    assert "script" not in page.tags and "link" not in page.tags
    assert "<script" not in raw.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in raw
    assert SCRIPT in "".join(page.text)  # the reader sees the continuation as text


def test_provenance_lists_hashes_and_configs(page, runs):
    import hashlib

    text = "\n".join(page.text)
    digest = hashlib.sha256((runs["lora-r4"] / "toxicity" / "result.json").read_bytes()).hexdigest()
    assert digest in text
    assert "0123456789abcdef" in text  # git commit
    assert '"threshold": 0.5' in text  # probe config


def test_markdown_summary(runs, tmp_path):
    out = write_report([runs["base"], runs["full-ft"], runs["lora-r4"]], tmp_path / "report.md", fmt="md")
    md = out.read_text(encoding="utf-8")
    assert md.startswith("# Fine-tuning audit report")
    assert "**lora-r4** keeps the base behaviour on" in md
    for metric in METRICS:
        assert metric in md
    assert "<script" not in md and "&lt;script&gt;" in md
    rows = [line for line in md.splitlines() if " | lora-r4 | lora | 4 |" in line]
    assert len(rows) == 9 and all(line.count(" | ") == 9 for line in rows)
    assert md.index("## Verdict") < md.index("| verdict | checkpoint |")  # the verdict comes first
    assert "- **lora-r4: KEEPS**" in md
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # atomic: no temp file left behind


def test_report_without_base_says_so(runs, tmp_path):
    out = write_report([runs["full-ft"], runs["lora-r4"]], tmp_path / "r.md", fmt="md")
    assert "No base run among the inputs" in out.read_text()


def test_bad_format_is_a_config_error(runs, tmp_path):
    with pytest.raises(ConfigError, match="--format pdf: expected html or md"):
        write_report([runs["base"]], tmp_path / "x", fmt="pdf")


def test_report_cli(runs, tmp_path):
    from typer.testing import CliRunner

    from audit.cli import app

    out = tmp_path / "cli.md"
    res = CliRunner().invoke(app, ["report", str(runs["base"]), str(runs["lora-r4"]), "--out", str(out),
                                   "--format", "md"])
    assert res.exit_code == 0, res.output
    assert "lora-r4" in out.read_text()


def test_shift_tables_without_numeric_columns_draw_nothing(tmp_path):
    """A shift table with no plottable column yields no chart (not a crash on an empty grid)."""
    import json

    run = make_run(tmp_path / "odd", "odd", "lora", rank=2, steps=10, seed=8)
    f = run / "shift" / "result.json"
    data = json.loads(f.read_text())
    data["tables"] = {"logit_lens": [{"model": "tuned", "layer": 0}],
                      "divergence_by_slice": [{"slice": "neutral", "kind": "text only"}],
                      "weight_delta": [{"module": "q_proj", "layer": 0, "fro_norm": None, "effective_rank": None}]}
    f.write_text(json.dumps(data))
    out = write_report([run], tmp_path / "r.html")
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    alts = [img["alt"] for img in page.images]
    assert not {"Logit lens", "KL by slice", "Weight change"} & set(alts)
    assert "toxicity by checkpoint" in alts


def _run_only_inputs(tmp_path):
    from audit.report import plots as P
    from audit.report.compare_runs import load_runs, pick_base

    runs = three_runs(tmp_path / "runs")
    dirs = [str(runs["base"]), str(runs["full-ft"]), str(runs["lora-r4"]),
            str(make_run(tmp_path / "runs" / "lora16", "lora-r16", "lora", rank=16, steps=50, tox_scale=0.5, seed=4))]
    loaded, _ = pick_base(load_runs(dirs), dirs[0])
    return dirs, loaded, P.palette(r.label for r in loaded)


def test_charts_drawn_in_the_helper_process_are_the_ones_drawn_in_process(tmp_path):
    """`report.figure_pool` draws the run-only charts in `python -m audit.report.figure_pool`; the report
    must not depend on where they were drawn."""
    from audit.report import figure_pool

    dirs, runs, colors = _run_only_inputs(tmp_path)
    here = figure_pool.run_only_figures(runs, colors, 20, {})
    helper = figure_pool.start_run_only_figures(dirs, dirs[0], runs, colors, 20, {}, parallel=True)()
    assert all(here[k] for k in figure_pool.KEYS)
    assert {k: [(f.title, f.caption, f.data_uri, f.axes, f.too_few) for f in v] for k, v in here.items()} == \
        {k: [(f.title, f.caption, f.data_uri, f.axes, f.too_few) for f in v] for k, v in helper.items()}
    assert figure_pool.use_helper(len(dirs), None) == (figure_pool._cores() >= 2)
    assert figure_pool.use_helper(2, None) is False  # a small report is drawn in-process


def test_a_cancelled_chart_helper_is_stopped(tmp_path):
    """A report that fails after starting the helper must not leave it blocked on a pipe nobody reads."""
    from audit.report import figure_pool

    dirs, runs, colors = _run_only_inputs(tmp_path)
    pending = figure_pool.start_run_only_figures(dirs, dirs[0], runs, colors, 20, {}, parallel=True)
    helper = pending._helper
    pending.cancel()
    assert helper is not None and helper.returncode is not None
    assert all(pending()[k] for k in figure_pool.KEYS)  # asked anyway: drawn here


def test_a_failing_chart_helper_falls_back_to_drawing_in_process(tmp_path, monkeypatch):
    from audit.report import figure_pool

    dirs, runs, colors = _run_only_inputs(tmp_path)
    monkeypatch.setattr("sys.executable", "/bin/false")  # the helper exits 1 at once
    figures = figure_pool.start_run_only_figures(dirs, dirs[0], runs, colors, 20, {}, parallel=True)()
    assert all(figures[k] for k in figure_pool.KEYS)
