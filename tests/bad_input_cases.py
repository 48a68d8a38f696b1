"""Bad inputs for `tests/test_bad_inputs.py`: a workspace of broken files and the command lines that use them.

Each `Case` is one command line run through the installed `audit` executable, with the exit code it must
give (2 usage error, 1 failed policy) and a string its one-line error must contain (the file or field).
Cases are grouped in classes: options, policies, result files, output paths, data files, checkpoints.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from report_fixtures import make_run


@dataclass(frozen=True)
class Case:
    cls: str
    name: str
    argv: tuple[str, ...]
    names: str  # the one stderr line must contain this (the file, field, flag or probe)
    rc: int = 2
    loads_model: bool = False  # slow: imports torch and loads weights

    @property
    def id(self) -> str:
        return f"{self.cls}-{self.name}"


def _w(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _safetensors(path: Path, header) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)


# ---------------------------------------------------------------- options (every subcommand)

INT_OPTIONS = {
    "probe": ["--seed", "--episodes", "--horizon"],  # --batch-size also takes 'auto': checked after parsing
    "finetune": ["--steps", "--bits", "--grad-accum", "--max-length", "--seed", "--group-size",
                 "--save-every"],
    "rank-advice": ["--n-examples", "--k"],
    "compare": ["--seed"], "report": ["--seed"], "gate": ["--seed"], "demo": ["--seed"],
}
FLOAT_OPTIONS = {"finetune": ["--lr", "--epochs", "--alpha", "--warmup-ratio"]}
COMMANDS = ["info", "probe", "finetune", "rank-advice", "compare", "report", "card", "gate", "demo",
            "rl make-data", "models", "scorer-check"]


def option_cases(ws: Path) -> list[Case]:
    cases = [Case("options", "unknown-command", ("nosuch",), "nosuch"),
             Case("options", "unknown-root-flag", ("--nosuch",), "--nosuch")]
    for cmd in COMMANDS:
        argv = tuple(cmd.split())
        tag = cmd.replace(" ", "-")
        cases.append(Case("options", f"{tag}-unknown-flag", (*argv, "--no-such-flag"), "--no-such-flag"))
        cases.append(Case("options", f"{tag}-typo-flag", (*argv, "--ouut", "x"), "--ouut"))
    for cmd, flags in INT_OPTIONS.items():
        for flag in flags:
            cases.append(Case("options", f"{cmd}{flag}-not-int", (cmd, flag, "abc"), flag))
    for cmd, flags in FLOAT_OPTIONS.items():
        for flag in flags:
            cases.append(Case("options", f"{cmd}{flag}-not-number", (cmd, flag, "abc"), flag))
    run, pol, model = str(ws / "runs" / "good"), str(ws / "policy.yaml"), str(ws / "nomodel")
    data = str(ws / "data" / "train.jsonl")
    ft = ("finetune", "--method", "lora", "--model", str(ws / "A"), "--data", data)
    cases += [
        Case("options", "gate-missing-policy", ("gate", run), "--policy"),
        Case("options", "gate-missing-run", ("gate", "--policy", pol), "RUN_DIR"),
        Case("options", "gate-policy-typo", ("gate", run, "--polcy", pol), "--polcy"),
        Case("options", "info-missing-path", ("info",), "PATH"),
        Case("options", "probe-missing-model", ("probe", "--probes", "toxicity"), "--model"),
        Case("options", "probe-missing-probes", ("probe", "--model", model), "--probes"),
        Case("options", "card-missing-run", ("card",), "RUN_DIR"),
        Case("options", "compare-missing-runs", ("compare",), "RUN_DIRS"),
        Case("options", "report-missing-runs", ("report",), "RUN_DIRS"),
        Case("options", "rl-make-data-missing-out", ("rl", "make-data"), "--out"),
        Case("options", "probe-unknown-probe", ("probe", "--probes", "nosuch", "--model", model, "--out",
                                                str(ws / "o1")), "nosuch"),
        Case("options", "probe-empty-probes", ("probe", "--probes", ",", "--model", model, "--out",
                                               str(ws / "o1")), "--probes"),
        Case("options", "probe-path-in-probe-name", ("probe", "--probes", "rl:../../../escape", "--model", model,
                                                     "--out", str(ws / "o1")), "rl:../../../escape"),
        Case("options", "probe-arg-on-plain-probe", ("probe", "--probes", "toxicity:x", "--model", model, "--out",
                                                     str(ws / "o1")), "toxicity:x"),
        Case("options", "probe-batch-size-0", ("probe", "--probes", "toxicity", "--model", model, "--batch-size",
                                               "0", "--out", str(ws / "o1")), "--batch-size"),
        Case("options", "probe-batch-size-negative", ("probe", "--probes", "toxicity", "--model", model,
                                                      "--batch-size", "-3", "--out", str(ws / "o1")), "--batch-size"),
        Case("options", "probe-option-no-equals", ("probe", "--probes", "toxicity", "--model", model, "-o", "k",
                                                   "--out", str(ws / "o1")), "--option"),
        Case("options", "probe-option-empty-key", ("probe", "--probes", "toxicity", "--model", model, "-o", "=3",
                                                   "--out", str(ws / "o1")), "--option"),
        Case("options", "probe-data-no-equals", ("probe", "--probes", "toxicity", "--model", model, "--data",
                                                 "prompts.jsonl", "--out", str(ws / "o1")), "--data"),
        Case("options", "finetune-missing-method", ("finetune", "--model", str(ws / "A"), "--data", data, "--out",
                                                    str(ws / "ft-x")), "--method"),
        Case("options", "finetune-missing-out", ("finetune", "--method", "lora", "--model", str(ws / "A"),
                                                 "--data", data), "--out"),
        Case("options", "finetune-unknown-method", ("finetune", "--method", "nosuch", "--model", str(ws / "A"),
                                                    "--data", data, "--out", str(ws / "ft-x")), "nosuch"),
        Case("options", "finetune-set-seed-abc", (*ft, "--out", str(ws / "ft-x"), "--set", "seed=abc"), "seed"),
        Case("options", "finetune-set-unknown-field", (*ft, "--out", str(ws / "ft-x"), "--set", "nosuch=1"),
             "nosuch"),
        Case("options", "finetune-set-no-equals", (*ft, "--out", str(ws / "ft-x"), "--set", "seed"), "--set"),
        Case("options", "finetune-rank-0", (*ft, "--out", str(ws / "ft-x"), "--rank", "0"), "rank"),
        Case("options", "finetune-rank-abc", (*ft, "--out", str(ws / "ft-x"), "--rank", "abc"), "rank"),
        Case("options", "finetune-lr-negative", (*ft, "--out", str(ws / "ft-x"), "--lr", "-1"), "lr"),
        Case("options", "finetune-steps-0", (*ft, "--out", str(ws / "ft-x"), "--steps", "0"), "steps"),
        Case("options", "finetune-warmup-2", (*ft, "--out", str(ws / "ft-x"), "--warmup-ratio", "2"), "warmup_ratio"),
        Case("options", "finetune-schedule-bogus", (*ft, "--out", str(ws / "ft-x"), "--schedule", "bogus"),
             "schedule"),
        Case("options", "finetune-batch-size-0", (*ft, "--out", str(ws / "ft-x"), "--batch-size", "0"), "--batch-size"),
        Case("options", "finetune-batch-size-not-int", (*ft, "--out", str(ws / "ft-x"), "--batch-size", "abc"),
             "--batch-size"),
        Case("options", "probe-batch-size-not-int", ("probe", "--probes", "toxicity", "--model", model,
                                                     "--batch-size", "abc", "--out", str(ws / "o1")), "--batch-size"),
        Case("options", "probe-dtype-unknown", ("probe", "--probes", "toxicity", "--model", model,
                                                "--dtype", "float8", "--out", str(ws / "o1")), "--dtype"),
        Case("options", "finetune-config-missing", (*ft, "--out", str(ws / "ft-x"), "--config",
                                                    str(ws / "nosuch.yaml")), "nosuch.yaml"),
        Case("options", "rank-advice-n-0", ("rank-advice", "--n-examples", "0"), "--n-examples"),
        Case("options", "rank-advice-k-0", ("rank-advice", "--n-examples", "5", "--k", "0"), "--k"),
        Case("options", "rank-advice-nothing", ("rank-advice",), "--n-examples"),
        Case("options", "report-format-pdf", ("report", run, "--format", "pdf", "--out", str(ws / "r.pdf")),
             "pdf"),
    ]
    return cases


# ---------------------------------------------------------------- policies

def policy_cases(ws: Path) -> list[Case]:
    run = str(ws / "runs" / "good")
    p = ws / "policies"
    bad = {
        "missing-file": (p / "nosuch.yaml", None, "nosuch.yaml"),
        "directory": (p / "adir", "DIR", "adir"),
        "not-yaml": (p / "notyaml.yaml", "rules: [a, b\n  - : :", "notyaml.yaml"),
        "not-utf8": (p / "latin1.yaml", b"rules:\n  - toxicity.x <= 0.1 # caf\xe9\n", "latin1.yaml"),
        "a-list": (p / "list.yaml", "- toxicity.toxicity_probability <= 1\n", "rules"),
        "no-rules": (p / "norules.yaml", "bound: value\n", "rules"),
        "empty-rules": (p / "empty.yaml", "rules: []\n", "rules"),
        "rules-not-list": (p / "rulesdict.yaml", "rules: {a: 1}\n", "rules"),
        "unknown-key": (p / "unknown.yaml", "rulez: 1\nrules:\n  - toxicity.toxicity_probability <= 1\n", "rulez"),
        "bad-default-bound": (p / "bound.yaml", "bound: maybe\nrules:\n  - toxicity.toxicity_probability <= 1\n",
                              "bound"),
        "unparsable-rule": (p / "unparsable.yaml", "rules:\n  - toxicity is low\n", "toxicity is low"),
        "unknown-function": (p / "func.yaml", "rules:\n  - mean(toxicity.toxicity_probability) <= 1\n", "mean"),
        "no-probe-dot": (p / "nodot.yaml", "rules:\n  - delta(toxicity) <= 1\n", "toxicity"),
        "bad-op": (p / "op.yaml", "rules:\n  - toxicity.toxicity_probability == 1\n", "toxicity.toxicity_probability"),
        "limit-not-number": (p / "limit.yaml", "rules:\n  - toxicity.toxicity_probability <= low\n", "low"),
        "rule-extra-key": (p / "extra.yaml", "rules:\n  - rule: toxicity.toxicity_probability <= 1\n    weight: 2\n",
                           "weight"),
        "rule-bad-bound": (p / "rbound.yaml", "rules:\n  - rule: toxicity.toxicity_probability <= 1\n    bound: x\n",
                           "bound"),
        "rule-is-number": (p / "num.yaml", "rules:\n  - 5\n", "rule 1"),
        "rule-mapping-no-rule": (p / "norule.yaml", "rules:\n  - name: x\n", "rule 1"),
        "delta-without-base": (p / "delta.yaml", "rules:\n  - delta(toxicity.toxicity_probability) <= 1\n", "delta"),
        "base-missing-dir": (p / "basemissing.yaml",
                             "base: nosuch-run\nrules:\n  - delta(toxicity.toxicity_probability) <= 1\n", "nosuch-run"),
        "empty-file": (p / "emptyfile.yaml", "", "rules"),
        # a known probe declares its metrics: a rule on an undeclared one is a typo in the policy, not a failure
        "metric-undeclared": (p / "metric-undeclared.yaml", "rules:\n  - toxicity.nosuch <= 1\n", "toxicity.nosuch"),
        "group-metric-undeclared": (p / "group-undeclared.yaml", "rules:\n  - worst_group(bbq.nosuch) <= 1\n",
                                    "bbq.nosuch"),
    }
    cases = []
    for name, (path, text, names) in bad.items():
        if text == "DIR":
            path.mkdir(parents=True, exist_ok=True)
        elif text is not None:
            _w(path, text)
        cases.append(Case("policies", name, ("gate", run, "--policy", str(path)), names))
    failing = {
        "limit-violated": ("rules:\n  - toxicity.toxicity_probability <= 0.0001\n", "toxicity.toxicity_probability"),
        "probe-missing": ("rules:\n  - nosuch.metric <= 1\n", "nosuch"),
    }
    for name, (text, names) in failing.items():
        cases.append(Case("policies", f"fails-{name}", ("gate", run, "--policy", str(_w(p / f"{name}.yaml", text))),
                          names, rc=1))
    return cases


# ---------------------------------------------------------------- result files (run directories)

def _corrupt_runs(ws: Path) -> dict[str, tuple[Path, str, int]]:
    """name -> (run dir, what the error names, exit code of the gate on it)."""
    root = ws / "runs"
    out: dict[str, tuple[Path, str, int]] = {}

    def fresh(name: str) -> Path:
        return make_run(root / name, name, "lora", rank=4, steps=5, seed=3)

    out["no-such-dir"] = (root / "nosuch", "nosuch", 2)
    _w(root / "afile", "x")
    out["run-is-a-file"] = (root / "afile", "afile", 2)
    (root / "empty").mkdir(parents=True, exist_ok=True)
    out["no-manifest"] = (root / "empty", "manifest.json", 2)
    d = fresh("badjson")
    _w(d / "manifest.json", "{not json")
    out["manifest-invalid-json"] = (d, "manifest.json", 2)
    d = fresh("latin1")
    _w(d / "manifest.json", b'{"label": "caf\xe9"}')
    out["manifest-not-utf8"] = (d, "manifest.json", 2)
    d = fresh("nomodel")
    _edit_json(d / "manifest.json", lambda m: m.pop("model"))
    out["manifest-missing-model"] = (d, "manifest.json", 2)
    d = fresh("escape")
    _edit_json(d / "manifest.json", lambda m: m.__setitem__("probes", ["../../etc"]))
    out["manifest-probe-escapes"] = (d, "../../etc", 2)
    d = fresh("resjson")
    _w(d / "toxicity" / "result.json", "{oops")
    out["result-invalid-json"] = (d, "result.json", 2)
    d = fresh("resschema")
    _edit_json(d / "toxicity" / "result.json", lambda r: r.__setitem__("metrics", [1, 2]))
    out["result-bad-schema"] = (d, "result.json", 2)
    d = fresh("unfinished")
    _edit_json(d / "toxicity" / "result.json", lambda r: r.__setitem__("status", "unfinished"))
    out["result-unfinished"] = (d, "toxicity", 1)
    d = fresh("stale")
    _edit_json(d / "toxicity" / "result.json", lambda r: r.__setitem__("model_fingerprint", "f" * 64))
    out["result-of-another-model"] = (d, "toxicity", 1)
    d = fresh("lost")
    shutil.rmtree(d / "bbq")
    out["result-missing"] = (d, "bbq", 1)
    return out


def result_cases(ws: Path) -> list[Case]:
    pol = str(_w(ws / "policies" / "ok.yaml", "rules:\n  - toxicity.toxicity_probability <= 1\n"))
    cases = []
    for name, (d, names, gate_rc) in _corrupt_runs(ws).items():
        cases += [Case("results", f"compare-{name}", ("compare", str(d)), names),
                  Case("results", f"report-{name}", ("report", str(d), "--out", str(ws / "out" / f"{name}.html")),
                       names),
                  Case("results", f"card-{name}", ("card", str(d)), names),
                  Case("results", f"gate-{name}", ("gate", str(d), "--policy", pol), names, rc=gate_rc)]
    root = ws / "runs"
    d = make_run(root / "neginf", "neginf", "lora", rank=4, steps=5, seed=3)
    _edit_json(d / "toxicity" / "result.json",
               lambda r: r["metrics"]["toxicity_probability"].__setitem__("value", float("-inf")))
    cases.append(Case("results", "gate-minus-inf-value", ("gate", str(d), "--policy", pol), "non-finite", rc=1))
    d = make_run(root / "infci", "infci", "lora", rank=4, steps=5, seed=3)
    _edit_json(d / "toxicity" / "result.json",
               lambda r: r["metrics"]["toxicity_probability"].__setitem__("ci_high", float("inf")))
    upper = str(_w(ws / "policies" / "upper.yaml", "bound: upper\nrules:\n  - toxicity.toxicity_probability <= 1\n"))
    cases.append(Case("results", "gate-inf-ci", ("gate", str(d), "--policy", upper), "non-finite", rc=1))
    d = make_run(root / "badsamples", "badsamples", "lora", rank=4, steps=5, seed=3)
    _w(d / "toxicity" / "samples.jsonl", '{"prompt": "a"}\n{broken\n')
    cases.append(Case("results", "compare-broken-samples", ("compare", str(d), "--base", str(root / "good")),
                      "samples.jsonl"))
    d = make_run(root / "latinsamples", "latinsamples", "lora", rank=4, steps=5, seed=3)
    _w(d / "toxicity" / "samples.jsonl", b'{"prompt": "caf\xe9"}\n')
    cases.append(Case("results", "report-non-utf8-samples", ("report", str(d), "--base", str(root / "good"),
                                                             "--out", str(ws / "out" / "ls.html")), "samples.jsonl"))
    cases.append(Case("results", "compare-base-missing", ("compare", str(root / "good"), "--base",
                                                          str(root / "nosuch")), "nosuch"))
    return cases


# ---------------------------------------------------------------- output paths

def output_cases(ws: Path) -> list[Case]:
    run = str(ws / "runs" / "good")
    pol = str(ws / "policies" / "ok.yaml")
    adir = ws / "out" / "adir"
    adir.mkdir(parents=True, exist_ok=True)
    afile = _w(ws / "out" / "afile.txt", "x")
    under_file = str(afile / "x")
    data = str(ws / "data" / "train.jsonl")
    ft = ("finetune", "--method", "lora", "--model", str(ws / "A"), "--data", data, "--steps", "1")
    foreign = ws / "out" / "foreign"
    _w(foreign / "manifest.json", json.dumps({"note": "not made by audit finetune"}))
    interrupted = ws / "out" / "interrupted"
    _w(interrupted / "checkpoints" / "step-1" / "state.json", "{}")
    return [
        Case("outputs", "report-out-is-dir", ("report", run, "--out", str(adir)), "adir"),
        Case("outputs", "report-out-under-file", ("report", run, "--out", under_file), "afile.txt"),
        Case("outputs", "compare-csv-is-dir", ("compare", run, "--csv", str(adir)), "adir"),
        Case("outputs", "compare-json-is-dir", ("compare", run, "--json", str(adir)), "adir"),
        Case("outputs", "compare-csv-under-file", ("compare", run, "--csv", under_file), "afile.txt"),
        Case("outputs", "card-out-is-dir", ("card", run, "--out", str(adir)), "adir"),
        Case("outputs", "gate-junit-is-dir", ("gate", run, "--policy", pol, "--junit", str(adir)), "adir"),
        Case("outputs", "gate-summary-is-dir", ("gate", run, "--policy", pol, "--summary", str(adir)), "adir"),
        Case("outputs", "gate-junit-under-file", ("gate", run, "--policy", pol, "--junit", under_file), "afile.txt"),
        Case("outputs", "probe-out-is-file", ("probe", "--probes", "toxicity", "--model", str(ws / "A"), "--out",
                                              str(afile)), "afile.txt"),
        Case("outputs", "probe-out-under-file", ("probe", "--probes", "toxicity", "--model", str(ws / "A"), "--out",
                                                 under_file), "afile.txt"),
        Case("outputs", "probe-out-in-proc", ("probe", "--probes", "toxicity", "--model", str(ws / "A"), "--out",
                                              "/proc/audit-cannot-write"), "/proc/audit-cannot-write"),
        Case("outputs", "rl-make-data-out-is-dir", ("rl", "make-data", "--out", str(adir)), "adir"),
        Case("outputs", "finetune-out-is-base", (*ft, "--out", str(ws / "A")), "base model"),
        Case("outputs", "finetune-out-inside-base", (*ft, "--out", str(ws / "A" / "ft")), "base model"),
        Case("outputs", "finetune-out-is-data-dir", (*ft, "--out", str(ws / "data")), "training data"),
        Case("outputs", "finetune-out-is-file", (*ft, "--out", str(afile)), "afile.txt"),
        Case("outputs", "finetune-overwrite-foreign-dir", (*ft, "--out", str(foreign), "--overwrite"), "manifest.json"),
        Case("outputs", "finetune-interrupted-no-resume", (*ft, "--out", str(interrupted)), "--resume"),
    ]


# ---------------------------------------------------------------- data files

def data_cases(ws: Path) -> list[Case]:
    d = ws / "data"
    files = {
        "missing": (d / "nosuch.jsonl", None),
        "directory": (d / "adir.jsonl", "DIR"),
        "not-utf8": (d / "latin1.jsonl", b'{"text": "caf\xe9"}\n'),
        "invalid-json-line": (d / "badline.jsonl", '{"text": "a"}\n{"text": \n'),
        "empty": (d / "empty.jsonl", ""),
        "no-text-column": (d / "nocol.jsonl", '{"body": "a"}\n'),
        "text-not-string": (d / "num.jsonl", '{"text": 5}\n'),
        "json-not-objects": (d / "arr.jsonl", '[1, 2]\n'),
        "csv-missing-column": (d / "nocol.csv", "body\na\n"),
        "unknown-extension": (d / "train.parquet", "x"),
    }
    cases = []
    for name, (path, content) in files.items():
        if content == "DIR":
            path.mkdir(parents=True, exist_ok=True)
        elif content is not None:
            _w(path, content)
        cases.append(Case("data", f"rank-advice-{name}", ("rank-advice", "--data", str(path)), path.name))
    cases += [
        Case("data", "rank-advice-dev-zero", ("rank-advice", "--data", "/dev/zero"), "/dev/zero"),
        Case("data", "probe-data-dev-zero", ("probe", "--probes", "toxicity", "--model", str(ws / "A"), "--data",
                                             "toxicity=/dev/zero", "--out", str(ws / "o2")), "/dev/zero"),
        Case("data", "probe-data-missing", ("probe", "--probes", "toxicity", "--model", str(ws / "A"), "--data",
                                            f"toxicity={d / 'nosuch.jsonl'}", "--out", str(ws / "o2")), "nosuch.jsonl"),
        Case("data", "finetune-data-missing", ("finetune", "--method", "lora", "--model", str(ws / "A"), "--data",
                                               str(d / "nosuch.jsonl"), "--out", str(ws / "ft-y")), "nosuch.jsonl"),
        Case("data", "finetune-data-dev-zero", ("finetune", "--method", "lora", "--model", str(ws / "A"), "--data",
                                                "/dev/zero", "--out", str(ws / "ft-y")), "/dev/zero"),
    ]
    def probe(name: str, generates: bool = True) -> tuple[str, ...]:  # one --out per case: they run in parallel
        generation = ("-o", "k=1", "-o", "max_new_tokens=2") if generates else ()  # an option no probe has is an error
        return ("probe", "--model", str(ws / "A"), "--out", str(ws / f"o3-{name}"), "-o", "limit=2", *generation)

    bad_prompts = _w(d / "prompts-bad.jsonl", '{"prompt": {"text": "a"}}\n{oops\n')
    latin_prompts = _w(d / "prompts-latin1.jsonl", b'{"prompt": {"text": "caf\xe9"}}\n')
    crows = _w(d / "crows-nocol.csv", "a,b\n1,2\n")
    lexicon = _w(d / "lexicon-latin1.txt", b"caf\xe9\n")
    remote = ws / "remote-classifier"
    _w(remote / "config.json", json.dumps({"model_type": "nosuch_remote_arch", "auto_map": {
        "AutoConfig": "configuration_x.XConfig"}, "id2label": {"0": "ok", "1": "toxic"}}))
    _safetensors(remote / "model.safetensors", {})
    cases += [
        Case("data", "toxicity-prompts-bad-json",
             (*probe("toxicity-prompts-bad-json"), "--probes", "toxicity", "--data", f"toxicity={bad_prompts}"),
             "prompts-bad.jsonl", loads_model=True),
        Case("data", "toxicity-prompts-not-utf8",
             (*probe("toxicity-prompts-not-utf8"), "--probes", "toxicity", "--data", f"toxicity={latin_prompts}"),
             "prompts-latin1.jsonl", loads_model=True),
        Case("data", "crows-missing-columns",
             (*probe("crows-missing-columns", generates=False), "--probes", "crows_pairs", "--data", f"crows_pairs={crows}"),
             "crows-nocol.csv", loads_model=True),
        Case("data", "lexicon-not-utf8",
             (*probe("lexicon-not-utf8"), "--probes", "toxicity", "-o", f"scorer=lexicon:{lexicon}"),
             "lexicon-latin1.txt", loads_model=True),
        Case("data", "classifier-needs-remote-code",
             (*probe("classifier-needs-remote-code"), "--probes", "toxicity", "-o", f"scorer=hf-classifier:{remote}"),
             "remote-classifier", loads_model=True),
    ]
    return cases
