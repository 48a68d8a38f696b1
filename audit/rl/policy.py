"""Policies for the fairness environments: a language model, and the baselines it is measured against.

Every policy maps a batch of observations (one per environment) to a probability for every action
(`probs`), and acts by sampling from it (`act`); deterministic policies put all the mass on one action.
Keeping the probabilities lets the runner measure agreement with a reference policy exactly, including
the randomised threshold of the equal-opportunity policy.

- `ModelPolicy`: the observation becomes a text prompt (group and features, then the options) and the
  action is the action word with the highest log-likelihood after it. Nothing is generated or parsed:
  the model can only choose among the action words, which must each be a single token.
- `MaxUtilityPolicy`: the decision-maker's best response. Lending / admission: approve when the expected
  gain is positive at the applicant's score (Liu et al. 2018's MaxUtil); attention: visit the site with
  the most incidents found per visit so far (unvisited sites first).
- `EqualOpportunityPolicy`: lending / admission: group-specific (randomised) thresholds with equal
  true-positive rates, chosen to maximise the expected gain (Hardt et al. 2016, Liu et al.'s EqOpt);
  attention: equal visits per site, which equalises the chance that an incident is discovered.
- `RandomPolicy`: uniform over actions.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..lm.tokens import pad_batch, pad_id as padding_id, start_id

POLICY_NAMES = ("max-utility", "equal-opportunity", "random")
DEFAULT_ACTION_LETTERS = tuple(" " + chr(ord("A") + i) for i in range(26))


def default_action_words(env) -> tuple[str, ...]:
    """' A', ' B', ... in the order of `env.action_descriptions` (positive action first for binary envs).

    Letters are single tokens for GPT-2, Llama and the tiny test tokenizer; the prompt says what each means.
    """
    n = env.action_space.n
    if n > len(DEFAULT_ACTION_LETTERS):
        raise ConfigError(f"environment has {n} actions; name them with the action_words option")
    letters = list(DEFAULT_ACTION_LETTERS[:n])
    if n == 2 and env.positive_action is not None:
        # 'A' names the positive action ("approve"), as a reader expects.
        letters = [letters[1], letters[0]] if env.positive_action == 1 else letters
    return tuple(letters)


def parse_action_words(value: Any, n_actions: int) -> Optional[tuple[str, ...]]:
    """An action_words option: a list, or a string separated by '|' (spaces kept: ' yes| no')."""
    if value is None or value == "":
        return None
    words = list(value) if isinstance(value, (list, tuple)) else str(value).split("|")
    if len(words) != n_actions:
        raise ConfigError(f"option 'action_words': expected {n_actions} words separated by '|' (one per action, "
                          f"in action order), got {len(words)}: {words!r}")
    if any(not w.strip() for w in words):
        raise ConfigError(f"option 'action_words': empty word in {words!r}")
    return tuple(words)


class Policy:
    """Base: `probs(observations) -> (batch, n_actions)` and `act` samples from it."""

    name = "policy"

    def __init__(self, env):
        self.env = env.unwrapped
        self.n_actions = int(self.env.action_space.n)

    def probs(self, observations: Sequence[dict[str, Any]]) -> np.ndarray:
        raise NotImplementedError

    def act(self, observations: Sequence[dict[str, Any]], rng: np.random.Generator) -> np.ndarray:
        p = self.probs(observations)
        if len(p) == 0:
            return np.zeros(0, dtype=int)
        u = rng.random(len(p))[:, None]
        return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), self.n_actions - 1).astype(int)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class RandomPolicy(Policy):
    name = "random"

    def probs(self, observations):
        return np.full((len(observations), self.n_actions), 1.0 / self.n_actions)


# ------------------------------------------------------------------ threshold policies (lending, admission)

def _group_tpr_curve(score_probs: np.ndarray, deserve: np.ndarray, tpr: float) -> np.ndarray:
    """P(positive | score) for one group: approve from the top score down until the true-positive rate
    reaches `tpr`, approving a fraction of the last level (a randomised threshold)."""
    positives = score_probs * deserve
    total = positives.sum()
    accept = np.zeros_like(score_probs)
    if total <= 0:
        return accept
    need = tpr * total
    for level in range(len(score_probs) - 1, -1, -1):
        if need <= 1e-15:
            break
        if positives[level] <= 0:  # above the threshold: approving it costs no true-positive rate
            accept[level] = 1.0
            continue
        take = min(1.0, need / positives[level])
        accept[level] = take
        need -= take * positives[level]
    return accept


def _expected_gain(model: dict, accept: np.ndarray) -> float:
    value = model["deserve_probs"] * model["gain"] - (1 - model["deserve_probs"]) * model["loss"]
    return float(np.sum(model["group_probs"][:, None] * model["score_probs"] * accept * value))


class ThresholdPolicy(Policy):
    """P(positive | group, score) from a table; for the lending and admission environments."""

    def __init__(self, env):
        super().__init__(env)
        if not hasattr(self.env, "decision_model"):
            raise ConfigError(f"policy {self.name!r} needs a score-based environment (lending, admission); "
                              f"{type(self.env).__name__} has no decision model")
        self.model = self.env.decision_model()
        self.accept = self._accept_table()

    def _accept_table(self) -> np.ndarray:
        raise NotImplementedError

    def probs(self, observations):
        out = np.zeros((len(observations), 2))
        pos = self.env.positive_action
        for i, obs in enumerate(observations):
            a = self.accept[int(obs["group"]), int(obs["score"])]
            out[i, pos] = a
            out[i, 1 - pos] = 1.0 - a
        return out

    def true_positive_rates(self) -> np.ndarray:
        m = self.model
        pos = m["score_probs"] * m["deserve_probs"]
        return (pos * self.accept).sum(axis=1) / np.maximum(pos.sum(axis=1), 1e-300)

    def describe(self):
        return {"name": self.name, "accept": self.accept.round(4).tolist(),
                "true_positive_rates": self.true_positive_rates().round(4).tolist()}


class MaxUtilityThreshold(ThresholdPolicy):
    name = "max-utility"

    def _accept_table(self):
        m = self.model
        value = m["deserve_probs"] * m["gain"] - (1 - m["deserve_probs"]) * m["loss"]
        return (value > 0).astype(float)


#: Equal-opportunity tables already searched, by the decision model's bytes: a probe builds this baseline for
#: every replicate and checkpoint, and the 2,001-rate search is the same each time.
_EO_TABLES: dict[bytes, tuple[np.ndarray, float]] = {}


def _model_key(model: dict) -> bytes:
    parts = []
    for k, v in sorted(model.items()):
        a = np.ascontiguousarray(np.asarray(v, dtype=float))
        parts.append(f"{k}{a.shape}=".encode() + a.tobytes())
    return b"|".join(parts)


class EqualOpportunityThreshold(ThresholdPolicy):
    name = "equal-opportunity"
    grid = 2001  # candidate true-positive rates

    def _accept_table(self):
        key = _model_key(self.model) + str(self.grid).encode()
        if key not in _EO_TABLES:
            if len(_EO_TABLES) >= 64:
                _EO_TABLES.clear()
            _EO_TABLES[key] = self._search()
        best, self.target_tpr_gain = _EO_TABLES[key]
        return best.copy()

    def _search(self) -> tuple[np.ndarray, float]:
        m = self.model
        best, best_gain = None, -np.inf
        for tpr in np.linspace(0.0, 1.0, self.grid):
            accept = np.stack([_group_tpr_curve(m["score_probs"][g], m["deserve_probs"][g], tpr)
                               for g in range(len(m["group_probs"]))])
            gain = _expected_gain(m, accept)
            if gain > best_gain + 1e-12:
                best, best_gain = accept, gain
        return best, best_gain


# ------------------------------------------------------------------ attention baselines

class _AttentionPolicy(Policy):
    def __init__(self, env):
        super().__init__(env)
        if not getattr(self.env, "has_incidents", False):
            raise ConfigError(f"policy {self.name!r} for attention allocation needs the attention environment")


class GreedyAttention(_AttentionPolicy):
    """Visit the site with the highest discovered incidents per visit (unvisited sites first, ties to
    the lowest index): the plug-in max-utility rule, blind to the censoring of its own data."""

    name = "max-utility"

    def probs(self, observations):
        out = np.zeros((len(observations), self.n_actions))
        for i, obs in enumerate(observations):
            visits = np.asarray(obs["visits"], float)
            found = np.asarray(obs["discovered"], float)
            est = np.where(visits > 0, found / np.maximum(visits, 1), np.inf)
            out[i, int(np.argmax(est))] = 1.0
        return out


class EqualAttention(_AttentionPolicy):
    """Visit the least-visited site (ties to the lowest index): every site's incidents get the same
    chance of being discovered, whatever their rate."""

    name = "equal-opportunity"

    def probs(self, observations):
        out = np.zeros((len(observations), self.n_actions))
        for i, obs in enumerate(observations):
            out[i, int(np.argmin(np.asarray(obs["visits"], float)))] = 1.0
        return out


def make_baseline(name: str, env) -> Policy:
    """A baseline policy by name for this environment; an unknown name is a ConfigError."""
    key = str(name).strip().lower().replace("_", "-")
    aliases = {"maxutil": "max-utility", "max-util": "max-utility", "eqopt": "equal-opportunity",
               "equal-opp": "equal-opportunity", "eo": "equal-opportunity"}
    key = aliases.get(key, key)
    attention = getattr(env.unwrapped, "has_incidents", False)
    if key == "random":
        return RandomPolicy(env)
    if key == "max-utility":
        return GreedyAttention(env) if attention else MaxUtilityThreshold(env)
    if key == "equal-opportunity":
        return EqualAttention(env) if attention else EqualOpportunityThreshold(env)
    raise ConfigError(f"policy {name!r}: unknown policy; expected one of {', '.join(POLICY_NAMES)}")


# ------------------------------------------------------------------ the language model as a policy

def check_single_tokens(tokenizer, words: Sequence[str]) -> list[int]:
    """The token id of every action word; a word that is not exactly one token is a ConfigError naming it."""
    ids = []
    for word in words:
        toks = list(tokenizer(word, add_special_tokens=False)["input_ids"])
        if len(toks) != 1:
            pieces = [tokenizer.decode([t]) for t in toks]
            raise ConfigError(
                f"action word {word!r} is {len(toks)} tokens for this tokenizer ({pieces!r}); every action word "
                f"must be a single token so the choice is one next-token decision: pick other words with the "
                f"action_words option (e.g. ' A| B')")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise ConfigError(f"action words {list(words)!r} map to the same token; choose distinct words")
    return ids


class ModelPolicy(Policy):
    """A causal language model choosing among single-token action words after a text prompt.

    The action is the word with the highest log P(word | prompt), batched over all environments at once;
    `last_logprobs` keeps the constrained scores of the last batch.
    """

    name = "model"

    def __init__(self, env, model, tokenizer, action_words: Optional[Sequence[str]] = None,
                 batch_size: int = 32):
        super().__init__(env)
        self.model = model
        self.tokenizer = tokenizer
        self.action_words = tuple(action_words) if action_words else default_action_words(self.env)
        if len(self.action_words) != self.n_actions:
            raise ConfigError(f"action words {list(self.action_words)!r}: expected {self.n_actions}, one per action")
        self.token_ids = check_single_tokens(tokenizer, self.action_words)
        self.batch_size = int(batch_size)
        self.last_logprobs: Optional[np.ndarray] = None

    def prompts(self, observations) -> list[str]:
        return [self.env.prompt(obs, self.action_words) for obs in observations]

    def logprobs(self, observations) -> np.ndarray:
        """(batch, n_actions) log P(word | prompt), one row per observation.

        The words are single tokens, so one forward pass per prompt gives every word's log-probability
        at the last position: the same numbers as `audit.lm.loglik.score_continuations(prompt, word)` (the
        tests check it) with one pass instead of one per word. Prompts are right-padded, length-sorted
        and cut from the left if longer than the model's context.
        """
        import torch

        from ..lm.loglik import max_length

        prompts = self.prompts(observations)
        if not prompts:
            return np.zeros((0, self.n_actions))
        limit = max_length(self.model) - 1
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        encoded = [list(ids)[-limit:] if ids else self._prefix() for ids in encoded]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        pad = padding_id(self.tokenizer)
        device = next(self.model.parameters()).device
        word_ids = torch.tensor(self.token_ids, device=device)
        out = np.zeros((len(prompts), self.n_actions))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                ids, mask = pad_batch([encoded[i] for i in rows], pad)
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                last = torch.tensor([len(encoded[i]) - 1 for i in rows], device=logits.device)
                lp = torch.log_softmax(logits[torch.arange(len(rows), device=logits.device), last].float(), dim=-1)
                out[rows] = lp[:, word_ids].cpu().numpy()
        return out

    def _prefix(self) -> list[int]:
        bos = start_id(self.tokenizer)
        return [bos] if bos is not None else [0]

    def probs(self, observations):
        lp = self.logprobs(observations)
        self.last_logprobs = lp
        out = np.zeros_like(lp)
        if len(lp):
            out[np.arange(len(lp)), lp.argmax(axis=1)] = 1.0
        return out

    def describe(self):
        return {"name": self.name, "action_words": list(self.action_words), "token_ids": self.token_ids}
