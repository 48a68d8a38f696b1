"""BBQ conventions: lm-eval's 12 choices, biased answers and edge cases; the default's names and
normalisation; the convention recorded in results; bad options through the `audit` executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from audit.errors import ConfigError
from audit.probes.bbq import probe as bbq
from audit.probes.bbq import lmeval as bbq_lmeval
from audit.probes.bbq.scores import Convention, answer_items, bias_metrics
from test_bbq import make_items, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _audit(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("audit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "audit"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "AUDIT_NO_PROGRESS": "1"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.fixture
def items(tmp_path):
    return bbq.load_items(write_jsonl(tmp_path / "Age.jsonl", make_items(unknown_pos=1)))


def test_lmeval_choices_replace_the_unknown_answer_by_ten_paraphrases(items):
    it = items[0]
    ch = bbq_lmeval.choices(it)
    assert len(ch) == 12 and ch[:2] == [a for i, a in enumerate(it.answers) if i != it.unknown]
    assert ch[2:] == list(bbq_lmeval.UNKNOWN_RESPONSES)
    ambig = next(i for i in items if i.condition == "ambig")
    assert bbq_lmeval.targets(ambig) == list(range(2, 12))  # any paraphrase is right
    disamb = next(i for i in items if i.condition == "disambig")
    assert bbq_lmeval.targets(disamb) == [ch.index(disamb.answers[disamb.label])]


def test_lmeval_biased_choices_agree_with_ours_on_plain_groups(items):
    for it in items:
        ours = {it.answers[i] for i in it.biased}
        theirs = {bbq_lmeval.choices(it)[k] for k in bbq_lmeval.biased_choices(it)}
        assert ours == theirs, it.example_id


def test_lmeval_group_parsing_quirks():
    assert bbq_lmeval._groups("F-Black") == ["f", "black"]
    assert bbq_lmeval._groups("lowSES-Asian") == ["low ses", "asian"]
    assert bbq_lmeval._groups("old woman_old") == ["old f", "woman", "old"]


def test_lmeval_convention_fixes_prompt_and_normalisation():
    with pytest.raises(ConfigError, match="cannot be changed with convention=lm-eval"):
        Convention.from_options("lm-eval", "{context} {question}", None)
    with pytest.raises(ConfigError, match="convention"):
        Convention.from_options("helm", None, None)
    with pytest.raises(ConfigError, match="normalisation"):
        Convention.from_options("default", None, "bytes")


def test_always_unknown_under_lmeval_names_and_zero_edge_case(items, preference_lm):
    conv = Convention.from_options("lm-eval", None, None)
    prompt = lambda it: conv.prompt.format(context=it.context, question=it.question)  # noqa: E731
    model, tok = preference_lm([(prompt(it), " " + bbq_lmeval.UNKNOWN_RESPONSES[3]) for it in items])
    choice, lls = answer_items(model, tok, items, conv, batch_size=8)
    assert lls.shape == (len(items), 12) and set(choice.tolist()) == {5}
    m = bias_metrics(items, conv.outcome_columns(items, choice), conv, n_resamples=20)
    assert set(m) == {"acc", "accuracy_amb", "accuracy_disamb", "amb_bias_score", "disamb_bias_score"}
    assert m["accuracy_amb"].value == 1.0 and m["accuracy_disamb"].value == 0.0
    assert m["disamb_bias_score"].value == 0.0 and "0.0 by lm-eval's rule" in m["disamb_bias_score"].note
    default = Convention()
    d = bias_metrics(items, default.outcome_columns(items, np.array([it.unknown for it in items])), default, n_resamples=20)
    assert d["s_dis"].value is None  # the paper's formula is undefined here, not 0


def test_normalisation_divides_by_tokens_or_characters(items, monkeypatch):
    """A raw sum penalises the long UNKNOWN answer ("Can't be determined"); per character it does not."""
    import audit.lm.loglik
    from audit.lm.loglik import Loglik

    def fake(model, tok, contexts, conts, **kw):  # every character costs 1 nat, every option 6 more
        return [Loglik(total=-(len(c) + 6.0), n_tokens=max(1, len(c) // 4)) for c in conts]

    monkeypatch.setattr(audit.lm.loglik, "score_continuations", fake)
    it = [i for i in items if i.condition == "ambig"][:1]
    picks = {n: int(answer_items(None, None, it, Convention(normalisation=n))[0][0]) for n in ("none", "char")}
    assert it[0].answers[picks["none"]] != it[0].answers[it[0].unknown]
    assert picks["char"] == it[0].unknown  # the longest option has the best per-character score
    _, raw = answer_items(None, None, it, Convention(normalisation="char"))
    assert raw[0].tolist() == [-(len(" " + a) + 6.0) for a in it[0].answers]  # raw sums are what is stored


@pytest.mark.slow
def test_cli_lmeval_convention_recorded_and_bad_value_is_one_line(tmp_path, tiny_llama_dir):
    data = write_jsonl(tmp_path / "Age.jsonl", make_items())
    out = tmp_path / "run"
    proc = _audit("probe", "--probes", "bbq", "--model", str(tiny_llama_dir), "--out", str(out),
                  "--data", f"bbq={data}", "-o", "bbq.convention=lm-eval", "-o", "bbq.n_bootstrap=20")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "bbq" / "result.json").read_text())
    assert res["config"]["convention"] == "lm-eval" and res["scorer"]["convention"] == "lm-eval"
    assert {"acc", "accuracy_amb", "amb_bias_score"} <= set(res["metrics"]) and "s_amb" not in res["metrics"]
    # stamped before the probe ran, not at its end (ISO timestamps have whole seconds)
    started, finished = (datetime.fromisoformat(res[k]) for k in ("started_at", "finished_at"))
    assert started <= finished and (finished - started).total_seconds() >= res["seconds"] - 1
    row = json.loads((out / "bbq" / "samples.jsonl").read_text().splitlines()[0])
    assert len(row["loglik"]) == 12 and row["convention"] == "lm-eval"
    bad = _audit("probe", "--probes", "bbq", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "bad"),
                 "--data", f"bbq={data}", "-o", "bbq.convention=helm")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    msg = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(msg) == 1 and "convention" in msg[0] and "lm-eval" in msg[0]
