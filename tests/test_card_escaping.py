"""Model-card text taken from manifests (git commit, paths, names, metric names) cannot render HTML."""

from __future__ import annotations

import json

from markdown_it import MarkdownIt

from audit.report.card import model_card

PAYLOAD = "x`<img src=x onerror=alert(1)>`<script>alert(2)</script>"


def test_crafted_manifest_values_stay_text(tmp_path):
    from report_fixtures import make_run

    run = make_run(tmp_path / "run", "run", "lora", rank=4, steps=5, seed=3)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["git_commit"] = PAYLOAD
    manifest["audit_version"] = PAYLOAD
    manifest["model"]["fingerprint"] = PAYLOAD
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = json.loads((run / "bbq" / "result.json").read_text())
    result["metrics"][PAYLOAD] = {"value": 0.5, "n": 3}
    result["groups"][PAYLOAD] = {"g1": {"value": 0.1, "n": 1}, "g2": {"value": 0.2, "n": 1}}
    (run / "bbq" / "result.json").write_text(json.dumps(result))
    card = model_card(run)
    html = MarkdownIt("commonmark").render(card.split("---", 2)[2])
    assert "<img" not in html and "<script" not in html
    assert "onerror=alert(1)" in html  # shown as text, not dropped
