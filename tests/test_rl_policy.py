"""Policies: threshold baselines (analytically and in the direction delayed-impact predicts), the runner and
metrics, and the language model as a constrained, batched policy."""

from __future__ import annotations

import numpy as np
import pytest

from audit.errors import ConfigError
from audit.rl.envs import make_env
from audit.rl.metrics import bootstrap_mean_columns, per_replicate_series, timeseries
from audit.rl.policy import (ModelPolicy, RandomPolicy, check_single_tokens, default_action_words, make_baseline,
                             parse_action_words)
from audit.rl.runner import parse_seeds, run_episodes

SEEDS = list(range(8))


def _final(env, policy, metric, group, horizon=150):
    ro = run_episodes(env, policy, seeds=SEEDS, episodes=1, horizon=horizon)
    return per_replicate_series(ro)[metric][group][:, -1]


# ------------------------------------------------------------------ baselines, analytically

@pytest.mark.parametrize("env_name", ["lending", "admission"])
def test_equal_opportunity_equalises_tpr_and_costs_utility(env_name):
    env = make_env(env_name).unwrapped
    mu, eo = make_baseline("max-utility", env), make_baseline("equal-opportunity", env)
    tpr_eo = eo.true_positive_rates()
    assert tpr_eo[0] == pytest.approx(tpr_eo[1], abs=1e-3)
    tpr_mu = mu.true_positive_rates()
    assert tpr_mu[0] - tpr_mu[1] > 0.05  # max-utility favours the higher-score group
    from audit.rl.policy import _expected_gain

    assert _expected_gain(mu.model, mu.accept) >= _expected_gain(eo.model, eo.accept) - 1e-12
    # thresholds: accepting is monotone in the score
    for table in (mu.accept, eo.accept):
        assert np.all(np.diff(table, axis=1) >= -1e-12)


def test_equal_opportunity_table_is_searched_once_per_decision_model():
    from audit.rl import policy as P

    env = make_env("lending").unwrapped
    P._EO_TABLES.clear()
    first = make_baseline("equal-opportunity", env)
    searched = first._search()  # the search itself, uncached
    again = make_baseline("equal-opportunity", env)
    assert len(P._EO_TABLES) == 1 and np.array_equal(again.accept, searched[0])
    assert again.target_tpr_gain == searched[1] == first.target_tpr_gain
    again.accept[:] = -1.0  # a policy's table is its own copy
    assert np.array_equal(make_baseline("equal-opportunity", env).accept, searched[0])
    from audit.rl.envs.lending import LendingParams

    other = make_env("lending", LendingParams(interest_rate=0.5)).unwrapped
    make_baseline("equal-opportunity", other)
    assert len(P._EO_TABLES) == 2  # another decision model, another search


# ------------------------------------------------------------------ baselines, in simulation (directions)

def test_lending_max_utility_lends_less_to_the_lower_score_group():
    loans_mu = _final("lending", "max-utility", "cumulative_loans", "group 2")
    loans_eo = _final("lending", "equal-opportunity", "cumulative_loans", "group 2")
    assert loans_eo.mean() > loans_mu.mean()
    gap_mu = _final("lending", "max-utility", "tpr", "gap")
    gap_eo = _final("lending", "equal-opportunity", "tpr", "gap")
    assert gap_mu.mean() > abs(gap_eo.mean())


def test_admission_equal_opportunity_raises_the_disadvantaged_groups_qualification_more():
    drift_mu = _final("admission", "max-utility", "qualification_rate_drift", "group 2")
    drift_eo = _final("admission", "equal-opportunity", "qualification_rate_drift", "group 2")
    assert drift_eo.mean() > drift_mu.mean()
    adm_mu = _final("admission", "max-utility", "cumulative_admissions", "group 2")
    adm_eo = _final("admission", "equal-opportunity", "cumulative_admissions", "group 2")
    assert adm_eo.mean() > adm_mu.mean()


def test_attention_greedy_discovers_unequally_equal_attention_does_not():
    gap_mu = _final("attention", "max-utility", "discovery_ratio", "gap")
    gap_eo = _final("attention", "equal-opportunity", "discovery_ratio", "gap")
    assert np.abs(gap_mu).mean() > np.abs(gap_eo).mean() + 0.05
    util_mu = _final("attention", "max-utility", "utility", "all")
    util_eo = _final("attention", "equal-opportunity", "utility", "all")
    assert util_mu.mean() > util_eo.mean()


def test_agreement_with_itself_is_one_and_random_is_half():
    ro = run_episodes("lending", "max-utility", seeds=[0, 1], episodes=2, horizon=40, reference="max-utility")
    assert np.allclose(per_replicate_series(ro)["agreement"]["all"][:, -1], 1.0)
    ro = run_episodes("lending", "random", seeds=[0, 1], episodes=2, horizon=40, reference=RandomPolicy)
    assert np.allclose(per_replicate_series(ro)["agreement"]["all"][:, -1], 0.5)


# ------------------------------------------------------------------ runner and metrics

def test_runner_is_seeded_and_independent_of_other_replicates():
    a = run_episodes("lending", "random", seeds=[3, 4], episodes=2, horizon=30)
    b = run_episodes("lending", "random", seeds=[3, 4], episodes=2, horizon=30)
    c = run_episodes("lending", "random", seeds=[4], episodes=2, horizon=30)
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.groups, b.groups)
    assert np.array_equal(a.actions[2:], c.actions) and np.allclose(a.group_state[2:], c.group_state)


def test_timeseries_rows_and_intervals():
    ro = run_episodes("lending", "equal-opportunity", seeds=[0, 1, 2], episodes=2, horizon=20,
                      reference="max-utility")
    rows, final = timeseries(ro, every=5)
    assert {tuple(sorted(r)) for r in rows} == {("ci_high", "ci_low", "group", "metric", "n", "t", "value")}
    assert sorted({r["t"] for r in rows}) == [5, 10, 15, 20]
    for r in rows:
        if r["value"] is not None:
            assert r["ci_low"] - 1e-9 <= r["value"] <= r["ci_high"] + 1e-9
    loans = [r for r in rows if r["metric"] == "cumulative_loans" and r["group"] == "group 1"]
    assert [r["value"] for r in loans] == sorted(r["value"] for r in loans)  # cumulative never falls
    assert final["cumulative_loans"]["gap"].value == pytest.approx(
        final["cumulative_loans"]["group 1"].value - final["cumulative_loans"]["group 2"].value)
    assert set(final["agreement"]) == {"all", "group 1", "group 2", "gap"} and final["agreement"]["all"].n == 6


def test_bootstrap_mean_columns_ignores_undefined_cells():
    values = np.array([[1.0, np.nan], [3.0, np.nan], [5.0, 2.0]])
    mean, low, high, n = bootstrap_mean_columns(values, n_resamples=200)
    assert mean[0] == pytest.approx(3.0) and mean[1] == pytest.approx(2.0)
    assert n.tolist() == [3, 1]
    assert 1.0 <= low[0] <= 3.0 <= high[0] <= 5.0


def test_bad_runner_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="option 'horizon': must be a positive integer"):
        run_episodes("lending", "random", horizon=0)
    with pytest.raises(ConfigError, match="option 'episodes': must be a positive integer"):
        run_episodes("lending", "random", episodes=-1)
    with pytest.raises(ConfigError, match="unknown environment id"):
        run_episodes("bank", "random")
    with pytest.raises(ConfigError, match="policy 'fair': unknown policy"):
        run_episodes("lending", "fair")
    with pytest.raises(ConfigError, match="option 'seeds': expected comma-separated integers"):
        parse_seeds("1,x")


# ------------------------------------------------------------------ the model as a policy

@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    return model, tok


@pytest.mark.parametrize("env_name", ["lending", "admission", "attention"])
def test_default_action_words_are_single_tokens_for_the_tiny_tokenizer(tiny, env_name):
    _, tok = tiny
    words = default_action_words(make_env(env_name).unwrapped)
    assert len(check_single_tokens(tok, words)) == len(words)


def test_model_policy_picks_the_highest_loglik_word(tiny):
    from audit.lm.loglik import score_continuations

    model, tok = tiny
    env = make_env("lending").unwrapped
    policy = ModelPolicy(env, model, tok)
    observations = []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        observations.append(obs)
    probs = policy.probs(observations)
    for obs, row, lp in zip(observations, probs, policy.last_logprobs):
        prompt = env.prompt(obs, policy.action_words)
        assert prompt.endswith("Answer:") and "group" in prompt and "Credit score" in prompt
        scores = [s.total for s in score_continuations(model, tok, [prompt] * 2, list(policy.action_words))]
        assert lp == pytest.approx(scores, abs=1e-4)
        assert row.tolist() == [1.0 if i == int(np.argmax(scores)) else 0.0 for i in range(2)]


def test_batched_and_one_at_a_time_give_the_same_decisions(tiny):
    model, tok = tiny
    kwargs = dict(seeds=[0, 1], episodes=2, horizon=5)
    batched = run_episodes("lending", lambda env: ModelPolicy(env, model, tok, batch_size=4), **kwargs)
    single = run_episodes("lending", lambda env: ModelPolicy(env, model, tok), batch_envs=1, **kwargs)
    assert np.array_equal(batched.actions, single.actions)


def test_multi_token_action_words_are_refused_with_the_word_named(tiny):
    model, tok = tiny
    env = make_env("lending").unwrapped
    with pytest.raises(ConfigError, match=r"action word ' yes' is 2 tokens for this tokenizer"):
        ModelPolicy(env, model, tok, action_words=[" no", " yes"])
    with pytest.raises(ConfigError, match="map to the same token"):
        ModelPolicy(env, model, tok, action_words=[" A", " A"])
    with pytest.raises(ConfigError, match="option 'action_words': expected 2 words"):
        parse_action_words(" A| B| no", 2)
    assert parse_action_words(" no| denied", 2) == (" no", " denied")
