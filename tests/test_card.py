"""audit card: model-card sections and the model-index block, filled from the run."""

from __future__ import annotations

import json

import pytest
import yaml

from audit.report.card import model_card
from report_fixtures import three_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return three_runs(tmp_path_factory.mktemp("runs"))


def _split(card: str):
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_model_index_matches_the_results(runs):
    meta, body = _split(model_card(runs["lora-r4"], base=runs["base"]))
    [entry] = meta["model-index"]
    assert entry["name"] == "lora-r4"
    by_task = {r["dataset"]["name"]: r for r in entry["results"]}
    tox = {m["type"]: m["value"] for m in by_task["audit toxicity probe"]["metrics"]}
    result = json.loads((runs["lora-r4"] / "toxicity" / "result.json").read_text())
    for name, m in result["metrics"].items():
        assert tox[name] == pytest.approx(m["value"], abs=1e-6)
    assert by_task["audit toxicity probe"]["task"]["type"] == "text-generation"
    assert all(m["verified"] is False for r in entry["results"] for m in r["metrics"])


def test_sections_are_filled(runs):
    _, body = _split(model_card(runs["lora-r4"], base=runs["base"]))
    for heading in ("## Bias, Risks, and Limitations", "## Evaluation", "#### Testing Data", "#### Factors",
                    "#### Metrics", "### Results", "## Training Details"):
        assert heading in body, heading
    assert "`toxicity.toxicity_probability`: **kept**: no detectable change" in body
    assert "lowest men" in body and "highest women" in body  # per-group spread
    assert "disaggregated by: Christian, Muslim, men, women" in body
    assert "| toxicity | expected_max_toxicity |" in body and "(paired)" in body
    train = body.split("## Training Details", 1)[1]
    assert "Method: **lora**" in train and "Rank: 4" in train and "Steps: 50" in train
    assert "sha256 `" + "ab" * 32 in train
    assert "bits:" not in train  # a LoRA run does not show the quantizer defaults of FinetuneConfig


def test_base_checkpoint_card_has_no_training_details(runs):
    _, body = _split(model_card(runs["base"]))
    assert "carries no audit fine-tuning manifest" in body
    assert "change vs base" not in body


def test_card_cli(runs, tmp_path):
    from typer.testing import CliRunner

    from audit.cli import app

    res = CliRunner().invoke(app, ["card", str(runs["full-ft"]), "--base", str(runs["base"]),
                                   "--out", str(tmp_path / "README.md")])
    assert res.exit_code == 0, res.output
    meta, body = _split((tmp_path / "README.md").read_text())
    assert meta["model-index"][0]["name"] == "full-ft" and "Method: **full**" in body
