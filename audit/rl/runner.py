"""Run a policy in many copies of an environment at once and record every decision.

All replicates (seeds x episodes) step in lock-step, so a language-model policy scores the prompts of
every live environment in one batch (our own batch stepping, as `gymnasium.vector.SyncVectorEnv` would,
but without auto-reset: a replicate that terminates simply stops, and its cumulative metrics freeze).
Each replicate has its own environment seed and its own action-sampling generator, both derived from
(seed, episode), so a replicate's trajectory does not depend on how many others run beside it or on the
batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError
from .envs import make_env, resolve_env_id
from .policy import Policy, default_action_words, make_baseline


@dataclass
class Rollout:
    """Every decision of every replicate: arrays are (replicates, horizon[, groups])."""

    env_id: str
    policy: str
    group_names: tuple[str, ...]
    positive_label: str
    state_label: str
    has_deserving: bool
    has_incidents: bool
    replicates: list[tuple[int, int]]  # (seed, episode)
    horizon: int
    active: np.ndarray  # bool (R, T): the replicate made a decision at t
    groups: np.ndarray  # int (R, T): whom the decision was about (-1: inactive)
    actions: np.ndarray  # int (R, T)
    positive: np.ndarray  # bool (R, T)
    deserving: np.ndarray  # float (R, T): 1/0, NaN where undefined
    rewards: np.ndarray  # float (R, T)
    group_state: np.ndarray  # float (R, T + 1, G), index 0 = after reset
    occurred: Optional[np.ndarray] = None  # float (R, T, G)
    discovered: Optional[np.ndarray] = None  # float (R, T, G)
    agreement: Optional[np.ndarray] = None  # float (R, T): P_reference(action taken), NaN if inactive
    reference: Optional[str] = None
    decisions: list[dict[str, Any]] = field(default_factory=list)  # per-decision log (when asked for)

    @property
    def n_replicates(self) -> int:
        return len(self.replicates)

    @property
    def n_steps(self) -> int:
        return int(self.active.sum())


def parse_seeds(value: Any, default: Sequence[int] = (0,)) -> list[int]:
    """'0,1,2' / [0, 1, 2] / 3 -> a list of ints; a bad list is a ConfigError naming the option."""
    if value is None or value == "":
        return list(default)
    if isinstance(value, int):
        return [value]
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip()]
    except ValueError:
        raise ConfigError(f"option 'seeds': expected comma-separated integers, got {value!r}") from None
    if not seeds:
        raise ConfigError(f"option 'seeds': no seed in {value!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"option 'seeds': repeated seed in {value!r}; replicates would be identical")
    return seeds


def check_positive(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option '{name}': expected a positive integer, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"option '{name}': must be a positive integer (at least 1), got {number}")
    return number


def replicate_seed(seed: int, episode: int, stream: int) -> int:
    """Independent seeds for the environment (stream 0) and the policy's sampling (stream 1)."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(episode), int(stream)]).generate_state(1)[0])


PolicyLike = Union[Policy, str, Callable[[Any], Policy]]


def _build_policy(policy: PolicyLike, env) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return make_baseline(policy, env)
    return policy(env)


def run_episodes(env: str, policy: PolicyLike, *, seeds: Sequence[int] = (0,), episodes: int = 1,
                 horizon: int = 100, reference: Optional[PolicyLike] = None, params: Any = None,
                 batch_envs: Optional[int] = None, log_decisions: bool = False,
                 action_words: Optional[Sequence[str]] = None,
                 progress: Optional[Callable[[int], None]] = None) -> Rollout:
    """Run `policy` for `horizon` steps in len(seeds) * episodes replicates of `env` and record everything.

    `policy` / `reference` are Policy objects, baseline names, or factories `env -> Policy`. With a
    reference, each decision also records the reference's probability of the action taken (agreement).
    `batch_envs` caps how many environments one policy call sees (None: all live ones; 1: one at a time).
    `log_decisions` keeps one row per decision (prompt, action word, reference probability ...); the
    prompt uses the policy's action words, else `action_words`, else the environment's defaults.
    Under a data-parallel launch the replicates are split over the ranks (audit.rl.sharded).
    """
    env_id = resolve_env_id(env)
    horizon = check_positive("horizon", horizon)
    episodes = check_positive("episodes", episodes)
    seeds = parse_seeds(list(seeds))
    if batch_envs is not None:
        batch_envs = check_positive("batch_envs", batch_envs)
    replicates = [(s, e) for s in seeds for e in range(episodes)]
    import functools

    from .sharded import run_sharded

    run = functools.partial(run_replicates, env_id, policy, horizon=horizon, reference=reference, params=params,
                            batch_envs=batch_envs, log_decisions=log_decisions, action_words=action_words,
                            progress=progress)
    return run_sharded(run, replicates)


def run_replicates(env_id: str, policy: PolicyLike, replicates: list[tuple[int, int]], *, horizon: int,
                   reference: Optional[PolicyLike], params: Any, batch_envs: Optional[int], log_decisions: bool,
                   action_words: Optional[Sequence[str]],
                   progress: Optional[Callable[[int], None]]) -> Rollout:
    """`run_episodes` for the given (seed, episode) replicates, in one process."""
    envs = [make_env(env_id, params) for _ in replicates]
    template = envs[0].unwrapped
    pol = _build_policy(policy, envs[0])
    ref = _build_policy(reference, envs[0]) if reference is not None else None
    words = tuple(getattr(pol, "action_words", None) or action_words or default_action_words(template))
    rngs = [np.random.default_rng(replicate_seed(s, e, 1)) for s, e in replicates]
    R, T, G = len(replicates), horizon, len(template.group_names)

    active = np.zeros((R, T), bool)
    groups = np.full((R, T), -1, int)
    actions = np.full((R, T), -1, int)
    positive = np.zeros((R, T), bool)
    deserving = np.full((R, T), np.nan)
    rewards = np.zeros((R, T))
    state = np.zeros((R, T + 1, G))
    occurred = np.zeros((R, T, G)) if template.has_incidents else None
    discovered = np.zeros((R, T, G)) if template.has_incidents else None
    agreement = np.full((R, T), np.nan) if ref is not None else None
    decisions: list[dict[str, Any]] = []

    observations: list[Any] = []
    for r, (s, e) in enumerate(replicates):
        obs, info = envs[r].reset(seed=replicate_seed(s, e, 0))
        observations.append(obs)
        state[r, 0] = info["group_state"]
    live = np.ones(R, bool)
    for t in range(T):
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            state[:, t + 1:] = state[:, t:t + 1]
            break
        chunk = len(idx) if batch_envs is None else batch_envs
        probs, ref_probs, logps = [], [], []
        for start in range(0, len(idx), chunk):
            part = [observations[r] for r in idx[start:start + chunk]]
            probs.append(pol.probs(part))
            lp = getattr(pol, "last_logprobs", None)
            logps.append(lp if lp is not None and len(lp) == len(part) else None)
            if ref is not None:
                ref_probs.append(ref.probs(part))
        p = np.vstack(probs)
        rp = np.vstack(ref_probs) if ref is not None else None
        lps = np.vstack(logps) if all(x is not None for x in logps) else None
        for i, r in enumerate(idx):
            a = int(np.minimum((np.cumsum(p[i]) < rngs[r].random()).sum(), pol.n_actions - 1))
            obs_before = observations[r]
            obs, reward, terminated, truncated, info = envs[r].step(a)
            observations[r] = obs
            active[r, t] = True
            groups[r, t] = int(info["group"])
            actions[r, t] = a
            positive[r, t] = bool(info["positive"])
            if info.get("deserving") is not None:
                deserving[r, t] = float(bool(info["deserving"]))
            rewards[r, t] = reward
            state[r, t + 1] = info["group_state"]
            if occurred is not None:
                occurred[r, t] = info["occurred"]
                discovered[r, t] = info["discovered"]
            if rp is not None:
                agreement[r, t] = rp[i, a]
            if log_decisions:
                # the item is the replicate (seed, episode): its decisions share one id across runs
                row = {"item_id": f"{replicates[r][0]}/{replicates[r][1]}", "replicate": int(r),
                       "seed": replicates[r][0], "episode": replicates[r][1], "t": t,
                       "group": template.group_names[int(info["group"])], "action": a, "reward": float(reward)}
                row["prompt"] = template.prompt(obs_before, words)
                row["action_word"] = words[a]
                if lps is not None:
                    row["logprobs"] = [round(float(x), 5) for x in lps[i]]
                if rp is not None:
                    row["reference_prob"] = float(rp[i, a])
                if info.get("deserving") is not None:
                    row["deserving"] = bool(info["deserving"])
                decisions.append(row)
            if terminated or truncated:
                live[r] = False
        for r in np.flatnonzero(~live):
            if not active[r, t]:
                state[r, t + 1] = state[r, t]
        if progress:
            progress(len(idx))
    for e in envs:
        e.close()
    return Rollout(env_id=env_id, policy=pol.name, group_names=tuple(template.group_names),
                   positive_label=template.positive_label, state_label=template.state_label,
                   has_deserving=template.has_deserving, has_incidents=template.has_incidents,
                   replicates=replicates, horizon=T, active=active, groups=groups, actions=actions,
                   positive=positive, deserving=deserving, rewards=rewards, group_state=state,
                   occurred=occurred, discovered=discovered, agreement=agreement,
                   reference=ref.name if ref is not None else None, decisions=decisions)
