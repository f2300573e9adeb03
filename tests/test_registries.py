"""Registries are the only lists of names: config validation and callers read them, never a name."""

from __future__ import annotations

import pytest
import torch

from r1reward.algo import (
    ADVANTAGE_ESTIMATOR_REGISTRY,
    ADVANTAGE_FILTER_REGISTRY,
    KL_ESTIMATOR_REGISTRY,
    POLICY_LOSS_REGISTRY,
    Registry,
    UnknownName,
    register_advantage_estimator,
    reinforce_returns,
)
from r1reward.algo.judges import JUDGE_PROMPTS, JUDGES, needs_model_actor
from r1reward.config import ConfigError, load_config
from r1reward.config.load import registered_names
from r1reward.config.schema import AlgoConfig
from r1reward.data.samples import Sample
from r1reward.trainer.experience import assign_advantages


def test_registry_lookup_declarations_and_errors():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1, big=True)
    assert registry.get("a") == 1 and registry.declared("a", "big") is True and registry.declared("a", "x", 7) == 7
    with pytest.raises(UnknownName, match=r"unknown widget 'b'; registered: \['a'\]") as error:
        registry.get("b")
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", 2)


def test_config_choices_are_the_registries():
    names = registered_names()
    assert names["algo.policy_loss"] == POLICY_LOSS_REGISTRY.names()
    assert set(names["algo.advantage_estimator"]) >= {"reinforce++", "grpo", "rloo"}
    assert names["algo.advantage_filter"] == ADVANTAGE_FILTER_REGISTRY.names() == ["none", "paper", "released"]
    assert names["algo.kl_estimator"] == KL_ESTIMATOR_REGISTRY.names() == ["k1", "k2", "k3"]
    assert names["reward.judge"] == JUDGES.names() == ["openai", "rule", "synthetic-trace", "vllm"]
    assert names["reward.judge_prompt"] == JUDGE_PROMPTS.names() == ["concise", "released"]
    with pytest.raises(ConfigError, match=r"'algo.kl_estimator' is 'k9', expected one of the registered \['k1'"):
        load_config(overrides=["algo.kl_estimator=k9"])
    assert needs_model_actor("vllm") and not needs_model_actor("rule") and not needs_model_actor("synthetic-trace")
    with pytest.raises(ConfigError, match="reward.judge=vllm needs 'reward.judge_model'"):
        load_config(overrides=["reward.judge=vllm"])  # declared at registration, checked at start-up


@register_advantage_estimator("test_grouped_mean", grouped=True)
def _grouped_mean(rewards, action_mask, config, *, n_samples_per_prompt, logp=None, logp_ref=None):
    groups = rewards.float().reshape(-1, n_samples_per_prompt)
    shaped = (groups - groups.mean(-1, keepdim=True)).flatten()
    return reinforce_returns(shaped, action_mask, gamma=config.gamma, reward_clip=config.reward_clip)


def test_a_new_estimator_declares_its_grouping_and_runs_through_the_experience_step():
    with pytest.raises(ConfigError, match="test_grouped_mean needs rollout.n_samples_per_prompt > 1"):
        load_config(overrides=["algo.advantage_estimator=test_grouped_mean"])
    config = load_config(
        overrides=[
            "algo.advantage_estimator=test_grouped_mean",
            "rollout.n_samples_per_prompt=2",
            "algo.advantage_filter=none",
        ]
    )
    samples = [Sample(prompt_ids=[1], completion_ids=[2, 3]) for _ in range(4)]
    assign_advantages(samples, [1.0, 0.0, 2.0, 2.0], config.algo, config.rollout.n_samples_per_prompt)
    # Group means 0.5 and 2.0: shaped rewards +0.5, -0.5, 0, 0; then standardised over the batch.
    first = [s.advantages[0] for s in samples]
    assert first[0] > 0 > first[1] and first[2] == pytest.approx(first[3])
    assert ADVANTAGE_ESTIMATOR_REGISTRY.declared("grpo", "grouped") and not ADVANTAGE_ESTIMATOR_REGISTRY.declared(
        "reinforce++", "grouped"
    )


def test_losses_read_their_settings_from_the_config():
    logp = torch.log(torch.tensor([[1.3]], dtype=torch.float64))
    args = (logp, torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1))
    for name in ("ppo", "stable_reinforce"):
        loss_fn = POLICY_LOSS_REGISTRY.get(name)
        assert loss_fn(*args, AlgoConfig(eps_clip=0.1))[0].item() == pytest.approx(-1.1)
        assert loss_fn(*args, AlgoConfig(eps_clip=0.5))[0].item() == pytest.approx(-1.3)
    huge = (torch.tensor([[0.0]]), torch.tensor([[-20.0]]), torch.tensor([[-1.0]]), torch.ones(1, 1))
    # Pre-CLIP bounds come from algo.delta_max: ratio capped at 10 instead of e^20.
    assert POLICY_LOSS_REGISTRY.get("stable_reinforce")(*huge, AlgoConfig(delta_max=10.0))[0].item() == pytest.approx(
        10.0
    )
