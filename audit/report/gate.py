"""A pass/fail gate for CI: check a run directory against a policy file.

Policy format (YAML)::

    # examples/gate-policy.yaml
    base: ../runs/base        # optional base run directory for delta() rules (relative to this file);
                              # `audit gate --base DIR` overrides it
    bound: value              # optional default for every rule: value | upper | lower (default: value)
    rules:
      # a rule is a string ...
      - toxicity.toxicity_probability <= 0.05
      # ... or a mapping with `rule` plus optional `name` and `bound`
      - rule: delta(bbq.s_amb) <= 0.02
        bound: upper
        name: BBQ ambiguous bias may not grow by more than 0.02
      - rule: worst_group(toxicity.toxicity_probability) <= 0.1

Rule grammar: ``[FUNC(]PROBE.METRIC[)] OP NUMBER`` (METRIC may end in a bracketed column, as in
``decisions.demographic_parity_difference[sex]``) with OP one of ``<= < >= >`` and FUNC one of

- *(none)*: the metric of the run (absolute limit);
- ``delta``: the run's metric minus the base run's (a budget relative to the base), with a paired
  bootstrap CI when both runs logged the same items, else an unpaired one (see `compare`);
- ``worst_group``: the worst group of the metric's per-group values: the largest one for ``<``/``<=``
  rules, the smallest for ``>``/``>=`` rules.

``bound`` says which number must satisfy the limit: ``value`` (the point estimate), ``upper`` (the upper
end of the 95% CI: "we are confident it is below") or ``lower`` (the lower end). For ``worst_group`` the
bound is taken per group before the worst is chosen.

A rule naming a metric that its probe does not declare (`METRIC_SPECS`, see audit.probes.metric_lookup;
`base.`/`change_vs_base.` spellings and `NAME[COLUMN]` of per-column metrics included) is a usage error
(exit 2) naming the closest declared names.

Fail closed: a declared metric named by a rule that the results lack, an undefined value (None), a missing CI
when a bound asks for one, an undefined group value, or a delta whose base lacks the metric: each fails
the rule. Exit codes of ``audit gate``: 0 every rule passes, 1 any rule fails, 2 usage error (a malformed
policy: the message names the rule).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import ConfigError, file_error

BOUNDS = ("value", "upper", "lower")
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_RULE = re.compile(r"^\s*(?:(?P<func>[A-Za-z_]+)\s*\(\s*(?P<inner>[^()]*?)\s*\)|(?P<bare>[^<>=\s()]+))\s*"
                   r"(?P<op><=|>=|<|>)\s*(?P<limit>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
# metric names may carry a bracketed column, as the decisions probe writes them: selection_rate[sex]
_METRIC = re.compile(r"^(?P<probe>[A-Za-z0-9_:\-]+)\.(?P<metric>[A-Za-z0-9_.\-]+(?:\[[^\[\]]+\])?)$")
FUNCS = ("delta", "worst_group")


@dataclass
class Rule:
    text: str
    name: str
    func: Optional[str]
    probe: str
    metric: str
    op: str
    limit: float
    bound: str
    index: int

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"


@dataclass
class Outcome:
    rule: Rule
    passed: bool
    observed: Optional[float]
    detail: str


@dataclass
class Policy:
    rules: list[Rule]
    base: Optional[Path] = None
    path: Optional[Path] = None


@dataclass
class GateReport:
    run_dir: Path
    label: str
    policy: Policy
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def n_failed(self) -> int:
        return sum(not o.passed for o in self.outcomes)


def parse_rule(text: str, index: int, bound: str, name: Optional[str] = None) -> Rule:
    where = f"rule {index} '{text}'"
    m = _RULE.match(text)
    if not m:
        raise ConfigError(f"{where}: cannot parse; expected e.g. 'toxicity.toxicity_probability <= 0.05', "
                          f"'delta(bbq.s_amb) <= 0.02' or 'worst_group(PROBE.METRIC) <= 0.1'")
    func = m.group("func")
    if func is not None and func not in FUNCS:
        raise ConfigError(f"{where}: unknown function '{func}'; expected one of {', '.join(FUNCS)}")
    target = m.group("inner") if func else m.group("bare")
    mm = _METRIC.match(target or "")
    if not mm:
        raise ConfigError(f"{where}: '{target}' is not PROBE.METRIC (e.g. toxicity.toxicity_probability)")
    if bound not in BOUNDS:
        raise ConfigError(f"{where}: bound '{bound}' is not one of {', '.join(BOUNDS)}")
    _check_declared(where, mm.group("probe"), mm.group("metric"))
    return Rule(text=text.strip(), name=name or text.strip(), func=func, probe=mm.group("probe"),
                metric=mm.group("metric"), op=m.group("op"), limit=float(m.group("limit")), bound=bound,
                index=index)


def _check_declared(where: str, probe: str, metric: str) -> None:
    """A rule may only name a metric its probe declares (audit.probes.metric_lookup): a misspelled or retired
    name is a usage error naming the closest declared ones, not a rule that fails for ever. Probes the
    toolkit does not know (plugins) declare nothing here; their rules are checked against the results."""
    from ..probes.metric_lookup import SPEC_MODULES, UndeclaredMetricError, declared_metric, probe_kind

    if probe_kind(probe) not in SPEC_MODULES:
        return
    try:
        declared_metric(probe, metric)
    except UndeclaredMetricError as exc:
        raise UndeclaredMetricError(f"{where}: {exc}") from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; every problem is a ConfigError naming the file and the rule."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise file_error(path, "no such policy file") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise file_error(path, f"cannot read the policy file ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise file_error(path, f"not valid YAML ({getattr(exc, 'problem', None) or exc})",
                         line=line + 1 if line is not None else None) from None
    if not isinstance(data, dict) or "rules" not in data:
        raise file_error(path, "expected a mapping with a 'rules' list", field="rules")
    unknown = set(data) - {"rules", "base", "bound", "name", "description"}
    if unknown:
        raise file_error(path, f"unknown key(s) {', '.join(sorted(unknown))}; expected rules, base, bound")
    default_bound = str(data.get("bound", "value"))
    if default_bound not in BOUNDS:
        raise file_error(path, f"'{default_bound}' is not one of {', '.join(BOUNDS)}", field="bound")
    raw = data["rules"]
    if not isinstance(raw, list) or not raw:
        raise file_error(path, "expected a non-empty list of rules", field="rules")
    rules = []
    for i, item in enumerate(raw, 1):
        try:
            if isinstance(item, str):
                rules.append(parse_rule(item, i, default_bound))
            elif isinstance(item, dict) and isinstance(item.get("rule"), str):
                extra = set(item) - {"rule", "name", "bound"}
                if extra:
                    raise ConfigError(f"rule {i} '{item['rule']}': unknown key(s) {', '.join(sorted(extra))}; "
                                      f"expected rule, name, bound")
                rules.append(parse_rule(item["rule"], i, str(item.get("bound", default_bound)),
                                        name=str(item["name"]) if item.get("name") else None))
            else:
                raise ConfigError(f"rule {i} {item!r}: expected a string or a mapping with a 'rule' string")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    base = data.get("base")
    base_path = None
    if base is not None:
        base_path = Path(str(base))
        if not base_path.is_absolute():
            base_path = (path.parent / base_path).resolve()
    return Policy(rules=rules, base=base_path, path=path)


def _pick(m, bound: str) -> tuple[Optional[float], str]:
    """The number a bound asks for from a Metric-like (value, ci_low, ci_high), and what is missing."""
    if m is None:
        return None, "missing"
    value = {"value": m.get("value"), "upper": m.get("ci_high"), "lower": m.get("ci_low")}[bound]
    if m.get("value") is None:
        return None, "undefined value"
    if not _finite(m.get("value")):
        return None, f"non-finite value ({m.get('value')})"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, f"no confidence interval for bound '{bound}'"
    if not _finite(value):
        return None, f"non-finite {bound} bound ({value})"
    return float(value), ""


def _finite(v) -> bool:
    """A tampered or broken result may hold inf, -inf or a non-number: none of them may pass a rule."""
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def evaluate(run_dir: str | Path, policy: Policy, base: Optional[str | Path] = None, seed: int = 0) -> GateReport:
    """Evaluate every rule of `policy` on the run (fail closed). `base` overrides the policy's base."""
    from ..rundir import RunIntegrityError
    from .compare import load_runs, metric_delta

    try:
        run = load_runs([run_dir])[0]
    except RunIntegrityError as exc:  # unfinished or stale results: every rule fails closed, naming why
        return _closed(run_dir, policy, str(exc))
    base_dir = Path(base) if base is not None else policy.base
    needs_base = [r for r in policy.rules if r.func == "delta"]
    base_run = None
    if needs_base:
        if base_dir is None:
            r = needs_base[0]
            raise ConfigError(f"rule {r.index} '{r.text}': delta() needs a base run; pass --base RUN_DIR or set "
                              f"'base:' in the policy")
        try:
            base_run = load_runs([base_dir])[0]
        except RunIntegrityError as exc:
            return _closed(run_dir, policy, f"base run: {exc}")
    report = GateReport(run_dir=Path(run_dir), label=run.label, policy=policy)
    for rule in policy.rules:
        report.outcomes.append(_evaluate_rule(rule, run, base_run, seed, metric_delta))
    return report


def _closed(run_dir: str | Path, policy: Policy, reason: str) -> GateReport:
    """A report in which every rule fails because the run (or its base) cannot be trusted."""
    from ..api import load_run

    manifest, _ = load_run(run_dir, check=False)
    report = GateReport(run_dir=Path(run_dir), label=manifest.label or Path(run_dir).name, policy=policy)
    report.outcomes = [Outcome(rule, False, None, f"fails closed: {reason}") for rule in policy.rules]
    return report


def _evaluate_rule(rule: Rule, run, base_run, seed: int, metric_delta) -> Outcome:
    cmp = OPS[rule.op]
    res = run.results.get(rule.probe)
    if res is None:
        return Outcome(rule, False, None, f"fails closed: the run has no '{rule.probe}' results")
    if rule.func == "worst_group":
        groups = res.groups.get(rule.metric)
        if not groups:
            return Outcome(rule, False, None, f"fails closed: no per-group values of {rule.key}")
        picked = {}
        for g, m in groups.items():
            v, why = _pick(m.model_dump(), rule.bound)
            if v is None:
                return Outcome(rule, False, None, f"fails closed: group '{g}': {why}")
            picked[g] = v
        worst = (max if rule.op in ("<", "<=") else min)(picked, key=picked.get)
        ok = cmp(picked[worst], rule.limit)
        return Outcome(rule, ok, picked[worst], f"worst group '{worst}' ({rule.bound}) = {_shown(rule, picked[worst])} "
                                                f"{'satisfies' if ok else 'violates'} {rule.op} {rule.limit:g}")
    m = res.metrics.get(rule.metric)
    if m is None:
        return Outcome(rule, False, None, f"fails closed: metric {rule.key} is missing from the results")
    if rule.func == "delta":
        bres = base_run.results.get(rule.probe)
        b = bres.metrics.get(rule.metric) if bres else None
        if b is None:
            return Outcome(rule, False, None, f"fails closed: the base run ({base_run.label}) lacks {rule.key}")
        d = metric_delta(run, base_run, rule.probe, rule.metric, m, b, seed=seed)
        v, why = _pick({"value": d["delta"], "ci_low": d["delta_ci_low"], "ci_high": d["delta_ci_high"]},
                       rule.bound)
        if v is None:
            return Outcome(rule, False, None, f"fails closed: change vs base: {why}")
        ok = cmp(v, rule.limit)
        return Outcome(rule, ok, v, f"change vs base {base_run.label} ({rule.bound}, {d['delta_kind']}) = "
                                    f"{'+' if v >= 0 else ''}{_shown(rule, v)} "
                                    f"{'satisfies' if ok else 'violates'} {rule.op} {rule.limit:g}")
    v, why = _pick(m.model_dump(), rule.bound)
    if v is None:
        return Outcome(rule, False, None, f"fails closed: {rule.key}: {why}")
    ok = cmp(v, rule.limit)
    return Outcome(rule, ok, v, f"{rule.key} ({rule.bound}) = {_shown(rule, v)} {'satisfies' if ok else 'violates'} "
                                f"{rule.op} {rule.limit:g}")


def _shown(rule: Rule, value: float) -> str:
    """A number as the rule's metric declares its formatting (plugins' undeclared metrics: 4 significant digits)."""
    from ..probes.metric_lookup import find_metric, format_number

    found = find_metric(rule.probe, rule.metric)
    return format_number(value, found.spec.digits) if found else f"{value:.4g}"


# ---------------------------------------------------------------- outputs for CI systems

def junit_xml(report: GateReport) -> str:
    """JUnit XML: one testcase per rule, a <failure> for each failing rule."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", name=f"audit gate: {report.label}", tests=str(len(report.outcomes)),
                       failures=str(report.n_failed), errors="0", skipped="0")
    for o in report.outcomes:
        case = ET.SubElement(suite, "testcase", name=o.rule.name, classname=f"audit.gate.{o.rule.probe}")
        if not o.passed:
            ET.SubElement(case, "failure", message=o.detail, type="GateRuleFailed").text = \
                f"{o.rule.text}\n{o.detail}"
        else:
            ET.SubElement(case, "system-out").text = o.detail
    suites = ET.Element("testsuites", name="audit gate", tests=str(len(report.outcomes)),
                        failures=str(report.n_failed))
    suites.append(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def markdown_summary(report: GateReport) -> str:
    from .markdown import md_cell

    verdict = "PASSED" if report.passed else f"FAILED ({report.n_failed} of {len(report.outcomes)} rules)"
    lines = [f"# audit gate: {verdict}", "",
             f"Run: `{report.run_dir}` ({md_cell(report.label)}); policy: `{report.policy.path}`", "",
             "| # | rule | bound | observed | result | detail |", "|---|---|---|---|---|---|"]
    for o in report.outcomes:
        obs = "—" if o.observed is None else _shown(o.rule, o.observed)
        lines.append(f"| {o.rule.index} | {md_cell(o.rule.name)} | {o.rule.bound} | {obs} | "
                     f"{'pass' if o.passed else '**FAIL**'} | {md_cell(o.detail)} |")
    from .definitions import metric_definition

    defs = [metric_definition(r.probe, r.metric) for r in dict((r.key, r) for r in report.policy.rules).values()]
    lines += ["", "Metrics, as their probes declare them:", ""]
    lines += [f"- `{md_cell(d['key'])}`: {md_cell(d['description'])}"
              + (f" ({md_cell(d['direction'])}; {md_cell(d['scale'])})" if d["declared"] else "") for d in defs]
    return "\n".join(lines) + "\n"


def write_outputs(report: GateReport, junit: Optional[Path] = None,
                  summary: Optional[Path] = None) -> tuple[Path, Path]:
    """Write the JUnit XML and the Markdown summary (default: next to the run, atomically)."""
    from ..results import write_text_atomic

    junit = Path(junit) if junit else report.run_dir / "gate-junit.xml"
    summary = Path(summary) if summary else report.run_dir / "gate-summary.md"
    write_text_atomic(junit, junit_xml(report))
    write_text_atomic(summary, markdown_summary(report))
    return junit, summary
