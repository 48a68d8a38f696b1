"""Progress without a terminal: stage lines and bounded heartbeats a CI log can follow; --quiet silences it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from audit.progress import LineProgress

AUDIT = str(Path(sys.executable).parent / "audit")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "AUDIT_NO_PROGRESS"}  # conftest and .ci/run set it
    env.update(extra)
    return env


def _probe(model: Path, out: Path, *flags: str, **env) -> subprocess.CompletedProcess:
    args = [AUDIT, *flags, "probe", "--probes", "toxicity", "--model", str(model), "--out", str(out),
            "--batch-size", "2", "-o", "toxicity.k=4", "-o", "toxicity.limit=6", "-o", "toxicity.max_new_tokens=6"]
    proc = subprocess.run(args, env=_env(**env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_probe_without_terminal_prints_stages_and_heartbeats(tiny_llama_dir, tmp_path):
    # 24 continuations in 12 batches of 2: the stage lasts far longer than a 1 ms heartbeat interval
    err = _probe(tiny_llama_dir, tmp_path / "run", AUDIT_HEARTBEAT_SECONDS="0.001").stderr
    assert "toxicity: 6 prompts × 4 samples = 24 continuations of up to 6 tokens" in err
    assert "toxicity: generating: started (24 continuations)" in err
    beats = re.findall(r"toxicity: generating: (\d+)/24 \((\d+)%\), [\d.,]+/s, elapsed \d+s, eta \d+", err)
    assert beats, err
    assert all(0 < int(done) < 24 for done, _ in beats)
    assert re.search(r"toxicity: generating: done, 24 continuations in \d+s", err)
    assert "\x1b[" not in err  # no terminal escape codes in a log


@pytest.mark.slow
def test_quiet_flag_silences_progress(tiny_llama_dir, tmp_path):
    proc = _probe(tiny_llama_dir, tmp_path / "run", "--quiet", AUDIT_HEARTBEAT_SECONDS="0.001")
    assert "toxicity: generating" not in proc.stderr and "continuations of up to" not in proc.stderr
    assert "expected_max_toxicity" in proc.stdout  # the result table still prints


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_heartbeats_are_bounded_by_time_and_tenths():
    clock, lines = FakeClock(), []
    line = LineProgress("stage", 10_000, emit=lines.append, interval=30.0, clock=clock)
    line.start()
    for _ in range(10_000):  # 100 s of work: a line at each tenth (10 s apart), none from the 30 s clock
        clock.t += 0.01
        line.advance()
    line.finish()
    beats = [x for x in lines if "%)" in x]
    assert len(beats) == 9 and len(lines) == 11
    assert "stage: 1,000/10,000 (10%), 100/s, elapsed 10s, eta 1m30s" in beats[0]
    assert lines[-1].endswith("stage: done, 10,000 items in 1m40s (100/s)")


def test_fast_stage_prints_only_start_and_end():
    clock, lines = FakeClock(), []
    line = LineProgress("stage", 10_000, emit=lines.append, interval=30.0, clock=clock)
    line.start()
    for _ in range(10_000):  # 1 s in all: tenths come faster than a sixth of the interval
        clock.t += 0.0001
        line.advance()
    line.finish()
    assert len(lines) == 2


def test_slow_stage_gets_a_heartbeat_every_interval_without_crossing_a_tenth():
    clock, lines = FakeClock(), []
    line = LineProgress("pre-training", 2000, emit=lines.append, interval=30.0, clock=clock)
    for _ in range(100):  # 100 steps of 7 s each: under 10% of the stage, 700 s
        clock.t += 7.0
        line.advance()
    assert len(lines) == 700 // 35  # one line at the first advance 30 s or more after the previous line
    assert all("/2,000 (" in x and "eta" in x for x in lines)
