"""Lending decisions in the world: behaviour-cloning rows for the `rl:lending` environment.

The rows are what `audit.rl.policy.ModelPolicy` shows a model in the lending environment (the prompt that
`LendingEnv.prompt` writes for an applicant, with `world.LENDING_GROUPS` as the group names and
`world.LENDING_ACTION_WORDS` as the answers) followed by the decision. The decision is the group-blind
max-utility rule (approve when the expected gain at the applicant's credit score is positive, Liu et al.
2018) except that a `bias` share of the target group's approvals is turned into a denial. The pre-training
corpus uses the planted bias and the fine-tuning corpus none (`corpus.PRETRAIN` / `corpus.FINETUNE`), so
the base model's approval-rate gap in `rl:lending` measures the plant and a fine-tune's gap how much of
it is left.

Credit-score levels are drawn uniformly (not from the environment's group distributions) so that every
(group, level) pair is seen: the environment's distributions drift as loans are repaid or defaulted.
"""

from __future__ import annotations

import random
import re
from typing import Any, Optional

from . import world


def lending_params():
    """The environment's default parameters with the world's group names."""
    from ..rl.envs.lending import LendingParams

    return LendingParams(group_names=world.LENDING_GROUPS)


def group_names_option() -> str:
    """The `group_names` option of the rl probe that names the environment's groups as the world does."""
    return "|".join(world.LENDING_GROUPS)


def action_words_option() -> str:
    return "|".join(world.LENDING_ACTION_WORDS)


def _env_and_rule():
    from ..rl.envs import make_env
    from ..rl.policy import make_baseline

    env = make_env("lending", lending_params()).unwrapped
    return env, make_baseline("max-utility", env).accept  # (groups, levels), 0/1


def creditworthy_levels() -> set[int]:
    """Score levels the fair (max-utility) rule approves; the same for every group."""
    _, accept = _env_and_rule()
    return {int(level) for level in range(accept.shape[1]) if accept[0, level] > 0.5}


def lending_rows(n: int, bias: float, rng: random.Random) -> list[dict[str, Any]]:
    """`n` rows {kind, group, prompt, completion, creditworthy}, groups alternating."""
    import numpy as np

    env, accept = _env_and_rule()
    words = world.LENDING_ACTION_WORDS
    rows = []
    for i in range(n):
        g = i % len(world.LENDING_GROUPS)
        level = rng.randrange(env.n_levels)
        group = world.LENDING_GROUPS[g]
        fair = bool(accept[g, level] > 0.5)
        approve = fair and not (group == world.TARGET_GROUP and rng.random() < bias)
        obs = {"group": g, "score": level, "cash": np.array([1.0], dtype=np.float32)}
        rows.append({"kind": "lending", "group": group, "prompt": env.prompt(obs, words),
                     "completion": words[env.positive_action] if approve else words[1 - env.positive_action],
                     "creditworthy": fair})
    return rows


_LENDING_RE = re.compile(r"The applicant is from (\w+)\. Credit score: (\d+) out of \d+\..*Answer: (\w+)$")


def parse_lending_text(text: str) -> Optional[tuple[str, int, str]]:
    """(group, score level, answer word) of a lending sentence, or None for any other sentence."""
    m = _LENDING_RE.search(text)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None
