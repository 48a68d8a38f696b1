"""The `rl` probe: the checkpoint as a policy in a fairness environment (`audit probe --probes rl:lending`).

Runs the model (`ModelPolicy`) in seeds x episodes replicates of the environment and reports, per group
and as gaps, how its decisions and their consequences evolve over time (`tables["timeseries"]` rows
{t, group, metric, value, ci_low, ci_high, n}); the final-step values with bootstrap intervals across
replicates go into `metrics` (gaps, utility, agreement with the reference policy) and `groups`. The
threshold baselines run on the same seeds for context (`tables["baselines"]`). When the checkpoint has a
base (an adapter, or `--base`), the base model runs too, and `agreement_change` says how far fine-tuning
moved the decisions toward the reference policy.

Options: see `RLOptions` (audit.rl.options) or `audit probes`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from ..results import Metric, ProbeResult, write_jsonl_atomic
from .envs import make_env, resolve_env_id, short_name
from .metric_specs import METRIC_SPECS  # noqa: F401  (every metric this probe emits; the registry reads it)
from .metrics import ALL, GAP, paired_difference, per_replicate_series, timeseries
from .policy import POLICY_NAMES, ModelPolicy, make_baseline, parse_action_words
from .options import DEFAULT_SEEDS, RLOptions  # noqa: F401 (DEFAULT_SEEDS re-exported)
from .runner import parse_seeds, run_episodes

PROBE_VERSION = "1"


def _read_options(ctx) -> dict[str, Any]:
    o = ctx.options_as(RLOptions)
    env_id = resolve_env_id(o.env)
    return {"env_id": env_id, "horizon": o.horizon, "episodes": o.episodes, "seeds": list(o.seeds),
            "reference": o.reference, "every": o.every, "baselines": o.baselines, "action_words": o.action_words,
            "params": _env_params(env_id, o.group_names), "seed": o.run_seed, "n_bootstrap": o.n_bootstrap}


def _env_params(env_id: str, value: Any):
    """The environment's default parameters with the groups (sites) renamed; None keeps the defaults."""
    if value is None or value == "":
        return None
    names = tuple(str(n).strip() for n in (value if isinstance(value, (list, tuple)) else str(value).split("|")))
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"option 'group_names': expected distinct non-empty names separated by '|', got {value!r}")
    defaults = make_env(env_id).unwrapped.params
    name_field = "group_names" if hasattr(defaults, "group_names") else "site_names"
    try:
        return dataclasses.replace(defaults, **{name_field: names})
    except TypeError:
        raise ConfigError(f"option 'group_names': {env_id} has no renameable groups") from None


def _final_table(name: str, final: dict[str, dict[str, Metric]]) -> list[dict[str, Any]]:
    return [{"policy": name, "group": group, "metric": metric, "value": m.value, "ci_low": m.ci_low,
             "ci_high": m.ci_high, "n": m.n} for metric, by_group in final.items() for group, m in by_group.items()]


def run(ctx) -> ProbeResult:
    opts = _read_options(ctx)
    template = make_env(opts["env_id"], opts["params"]).unwrapped
    words = parse_action_words(opts["action_words"], template.action_space.n)
    reference = opts["reference"]
    if reference is not None:
        make_baseline(reference, template)  # unknown names fail before the model runs
    handle = ctx.model
    policy = ModelPolicy(template, handle.model, handle.tokenizer, action_words=words, batch_size=ctx.batch_size)
    common = dict(seeds=opts["seeds"], episodes=opts["episodes"], horizon=opts["horizon"], reference=reference,
                  params=opts["params"])

    from ..progress import announce, bar

    stage = f"rl:{short_name(opts['env_id'])}"
    n_decisions = len(parse_seeds(list(opts["seeds"]))) * opts["episodes"] * opts["horizon"]
    announce(f"{stage}: {n_decisions // opts['horizon']:,} replicates × {opts['horizon']} steps = up to "
             f"{n_decisions:,} model decisions" + (", then the same for the base" if _has_base(ctx) else ""))
    with bar(f"{stage}: decisions", n_decisions, unit="decisions") as advance:
        rollout = run_episodes(opts["env_id"], policy, log_decisions=True, progress=advance, **common)
    boot = dict(seed=opts["seed"], n_resamples=opts["n_bootstrap"])
    rows, final = timeseries(rollout, every=opts["every"], **boot)
    result = ProbeResult(probe=f"rl:{short_name(opts['env_id'])}", probe_version=PROBE_VERSION)
    result.config = {"env": opts["env_id"], "env_params": _params(template), "episodes": opts["episodes"],
                     "horizon": opts["horizon"], "seeds": opts["seeds"], "replicates": rollout.n_replicates,
                     "reference_policy": reference, "action_words": list(policy.action_words),
                     "prompt_example": template.prompt(_first_obs(opts["env_id"], opts["params"]),
                                                      policy.action_words)}
    result.scorer = {"name": "constrained-loglik", "action_words": list(policy.action_words),
                     "token_ids": policy.token_ids}
    result.tables["timeseries"] = rows
    for metric, by_group in final.items():
        if ALL in by_group:
            result.metrics[metric] = by_group[ALL]
        if GAP in by_group:
            result.metrics[f"{metric}_gap"] = by_group[GAP]
            result.groups[metric] = {g: m for g, m in by_group.items() if g not in (GAP, ALL)}

    baseline_rows = _baseline_rows(opts["env_id"], common, boot) if opts["baselines"] else []

    if _has_base(ctx):
        from ..probes.paired import score_base

        def roll_base(side):
            base_policy = ModelPolicy(template, side.model, handle.tokenizer, action_words=policy.action_words,
                                      batch_size=ctx.batch_size)
            with bar(f"{stage}: base decisions", n_decisions, unit="decisions") as advance:
                return run_episodes(opts["env_id"], base_policy, progress=advance, **common)

        base_roll = score_base(ctx, roll_base)
        base_final = timeseries(base_roll, **boot)[1]
        baseline_rows += _final_table("base model", base_final)
        if reference is not None:
            result.metrics["base_agreement"] = base_final["agreement"][ALL]
            mine = per_replicate_series(rollout)["agreement"][ALL][:, -1]
            theirs = per_replicate_series(base_roll)["agreement"][ALL][:, -1]
            result.metrics["agreement_change"] = paired_difference(mine, theirs, **boot)
    if baseline_rows:
        result.tables["baselines"] = baseline_rows

    samples = ctx.out_dir / "samples.jsonl"
    result.n_samples = write_jsonl_atomic(samples, rollout.decisions)
    result.samples_path = str(samples)
    if rollout.n_steps < rollout.n_replicates * rollout.horizon:
        result.warnings.append(f"{rollout.n_replicates * rollout.horizon - rollout.n_steps} of "
                               f"{rollout.n_replicates * rollout.horizon} steps not taken: some episodes "
                               f"terminated early (e.g. the bank ran out of cash); their metrics froze there")
    return result


#: Baseline policies' final tables, by their whole setting: they do not depend on the model, so a study that
#: probes many checkpoints in one process rolls them out once (the rows are copied out, never shared).
_BASELINES: dict[str, list[dict[str, Any]]] = {}


def _baseline_rows(env_id: str, common: dict[str, Any], boot: dict[str, Any]) -> list[dict[str, Any]]:
    key = repr((env_id, sorted(common.items()), sorted(boot.items())))
    if key not in _BASELINES:
        if len(_BASELINES) >= 32:
            _BASELINES.clear()
        rows = []
        for name in POLICY_NAMES:
            roll = run_episodes(env_id, name, **common)
            rows += _final_table(name, timeseries(roll, **boot)[1])
        _BASELINES[key] = rows
    return [dict(r) for r in _BASELINES[key]]


def _has_base(ctx) -> bool:
    """Whether a base model can run too (an adapter's disabled self, or --base with the same tokenizer)."""
    if not ctx.has_base():
        return False
    if ctx.base is not None and ctx.base.tokenizer.get_vocab() != ctx.model.tokenizer.get_vocab():
        raise ConfigError(f"--base {ctx.base.path}: its tokenizer differs from the audited model's; the rl probe "
                          f"compares the two on the same prompts and action tokens")
    return True


def _params(env) -> dict[str, Any]:
    try:
        return dataclasses.asdict(env.params)
    except TypeError:
        return {}


def _first_obs(env_id: str, params: Any = None):
    env = make_env(env_id, params)
    obs, _ = env.reset(seed=0)
    return obs
