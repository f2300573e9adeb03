"""Load a YAML config onto the typed schema, apply `key=value` overrides, validate at start-up.

Every failure is a ConfigError naming the key and where it came from (the file or the command line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from r1reward.config.schema import Config
from r1reward.errors import UserError


class ConfigError(UserError):
    pass


CHOICES = {
    "model.dtype": {"float32", "bfloat16", "float16"},
    "rollout.dtype": {"float32", "bfloat16", "float16"},
    "reward.judge": {"rule", "vllm", "openai"},
    "algo.policy_loss": {"stable_reinforce", "ppo"},
    "algo.advantage_estimator": {"reinforce++", "grpo", "rloo"},
    "algo.advantage_filter": {"paper", "released", "none"},
    "algo.kl_estimator": {"k1", "k2", "k3"},
    "learner.zero_stage": {0, 1, 2, 3},
    "learner.backend": {"auto", "gloo", "nccl"},
    "resources.placement_strategy": {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"},
}
POSITIVE = [
    "rollout.num_workers", "rollout.tensor_parallel_size", "rollout.n_samples_per_prompt",
    "rollout.max_new_tokens", "learner.num_ranks", "learner.micro_batch_size",
    "learner.train_batch_size", "learner.epochs_per_rollout", "trainer.num_steps",
    "trainer.rollout_batch_size", "trainer.save_every", "data.max_prompt_tokens", "sft.num_epochs",
    "pipeline.num_train", "pipeline.num_heldout", "pipeline.select_k",
]


def _merge(base, layer, origin: str):
    try:
        return OmegaConf.merge(base, layer)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(f"{origin}: unknown key '{e.full_key}'") from None
    except OmegaConfBaseException as e:  # wrong type: the message says which value and type
        raise ConfigError(f"{origin}: bad value for '{e.full_key}': {str(e).splitlines()[0]}") from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Schema defaults <- YAML file <- overrides; returns a validated `Config` object."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            layer = OmegaConf.load(path)
        except Exception as e:  # yaml syntax errors carry line numbers; keep the first line
            raise ConfigError(f"{path}: cannot parse YAML: {str(e).splitlines()[0]}") from None
        cfg = _merge(cfg, layer, str(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"command line: overrides must be key=value, got {bad[0]!r}")
    if overrides:
        try:
            layer = OmegaConf.from_dotlist(list(overrides))
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: {str(e).splitlines()[0]}") from None
        cfg = _merge(cfg, layer, "command line")
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(config, origin=str(path) if path else "defaults")
    return config


def _get(config: Config, dotted: str):
    obj = config
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(config: Config, origin: str = "config") -> None:
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"{origin}: '{key}' is {value!r}, expected one of {sorted(map(str, allowed))}")
    for key in POSITIVE:
        if _get(config, key) <= 0:
            raise ConfigError(f"{origin}: '{key}' must be > 0, got {_get(config, key)}")
    if config.reward.judge == "openai" and not config.reward.judge_url:
        raise ConfigError(f"{origin}: reward.judge=openai needs 'reward.judge_url'")
    if config.reward.judge == "vllm" and not config.reward.judge_model:
        raise ConfigError(f"{origin}: reward.judge=vllm needs 'reward.judge_model'")
    if config.algo.delta_min <= 0 or config.algo.delta_max <= 1 or config.algo.delta_min >= 1:
        raise ConfigError(f"{origin}: algo.delta_min must lie in (0, 1) and algo.delta_max above 1")
    samples = config.trainer.rollout_batch_size * config.rollout.n_samples_per_prompt
    if samples % config.learner.train_batch_size:
        raise ConfigError(
            f"{origin}: trainer.rollout_batch_size x rollout.n_samples_per_prompt ({samples}) must be a "
            f"multiple of learner.train_batch_size ({config.learner.train_batch_size})")
    per_rank = config.learner.train_batch_size % (config.learner.num_ranks * config.learner.micro_batch_size)
    if per_rank:
        raise ConfigError(
            f"{origin}: learner.train_batch_size ({config.learner.train_batch_size}) must be a multiple of "
            f"learner.num_ranks x learner.micro_batch_size "
            f"({config.learner.num_ranks * config.learner.micro_batch_size})")


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def override(config: Config, **dotted: object) -> Config:
    """A validated copy with `section__key=value` replaced (e.g. override(c, model__path="x"))."""
    merged = OmegaConf.merge(OmegaConf.structured(config),
                             OmegaConf.from_dotlist([f"{k.replace('__', '.')}={v}" for k, v in dotted.items()]))
    result: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate(result, origin="derived config")
    return result
