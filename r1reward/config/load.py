"""Load a YAML config onto the typed schema, apply `key=value` overrides, validate at start-up.

Every failure is a ConfigError naming the key and where it came from (the file or the command line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from r1reward.algo.advantages import (
    ADVANTAGE_ESTIMATOR_REGISTRY,
    ADVANTAGE_FILTER_REGISTRY,
    KL_ESTIMATOR_REGISTRY,
)
from r1reward.algo.correction import ROLLOUT_CORRECTION_REGISTRY
from r1reward.algo.policy_loss import POLICY_LOSS_REGISTRY
from r1reward.algo.registry import Registry
from r1reward.config.schema import Config, RewardConfig
from r1reward.errors import UserError


class ConfigError(UserError):
    pass


# Settings whose allowed values are names in a registry: the registry is the only list, so a newly
# registered loss, estimator, filter or judge is accepted here with no edit.
REGISTERED = {
    "algo.policy_loss": POLICY_LOSS_REGISTRY,
    "algo.advantage_estimator": ADVANTAGE_ESTIMATOR_REGISTRY,
    "algo.advantage_filter": ADVANTAGE_FILTER_REGISTRY,
    "algo.kl_estimator": KL_ESTIMATOR_REGISTRY,
    "algo.rollout_correction": ROLLOUT_CORRECTION_REGISTRY,
}
# Fixed value sets that no registry owns (dtypes, DeepSpeed stages, Ray strategies).
CHOICES = {
    "model.dtype": {"float32", "bfloat16", "float16"},
    "rollout.dtype": {"float32", "bfloat16", "float16"},
    "learner.zero_stage": {0, 1, 2, 3},
    "algo.old_logprobs": {"auto", "learner", "sampler"},
    "learner.backend": {"auto", "gloo", "nccl"},
    "pipeline.model_size": {"tiny", "small"},
    "pipeline.source": {"synthetic", "data"},
    "pipeline.hard_examples": {"model-samples", "none"},
    "resources.placement_strategy": {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"},
}
POSITIVE = [
    "rollout.num_workers",
    "rollout.tensor_parallel_size",
    "rollout.n_samples_per_prompt",
    "rollout.max_new_tokens",
    "learner.num_ranks",
    "learner.micro_batch_size",
    "learner.train_batch_size",
    "learner.epochs_per_rollout",
    "trainer.num_steps",
    "trainer.rollout_batch_size",
    "trainer.save_every",
    "data.max_prompt_tokens",
    "sft.num_epochs",
    "pipeline.num_train",
    "pipeline.num_heldout",
    "pipeline.select_k",
    "pipeline.warmup_steps",
    "pipeline.annotate.tries",
    "pipeline.annotate.concurrency",
    "rollout.max_model_len",
    "rollout.temperature",
    "algo.eps_clip",
    "algo.filter_sigma",
    "algo.reward_clip",
    "learner.lr",
    "sft.lr",
    "learner.grad_clip",
    "timeouts.remote_call_s",
    "timeouts.startup_s",
    "timeouts.collective_s",
    "timeouts.weight_sync_s",
    "timeouts.judge_request_s",
    "reward.judge_failure_window",
]
NON_NEGATIVE = [
    "algo.kl_coef",
    "trainer.num_epochs",
    "reward.judge_retries",
    "learner.weight_decay",
    "sft.train_batch_size",
    "sft.save_every",
    "rollout.top_k",
    "trainer.max_restarts",
    "trainer.max_staleness",
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


def _judge_registries() -> dict[str, Registry]:
    # Imported here, at validation, so that importing the config package does not load the judges' HTTP
    # client.
    from r1reward.algo.judges import JUDGE_PROMPTS, JUDGES

    return {"reward.judge": JUDGES, "reward.judge_prompt": JUDGE_PROMPTS}


def registered_names() -> dict[str, list[str]]:
    """Each registry-backed setting and the names registered for it now."""
    return {key: registry.names() for key, registry in {**REGISTERED, **_judge_registries()}.items()}


def validate(config: Config, origin: str = "config") -> None:
    for key, names in registered_names().items():
        value = _get(config, key)
        if value not in names:
            raise ConfigError(f"{origin}: '{key}' is {value!r}, expected one of the registered {names}")
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"{origin}: '{key}' is {value!r}, expected one of {sorted(map(str, allowed))}")
    for key in POSITIVE:
        if _get(config, key) <= 0:
            raise ConfigError(f"{origin}: '{key}' must be > 0, got {_get(config, key)}")
    for key in NON_NEGATIVE:
        if _get(config, key) < 0:
            raise ConfigError(f"{origin}: '{key}' must be >= 0, got {_get(config, key)}")
    _check_ranges(config, origin)
    _check_batches(config, origin)
    _check_cancellations(config, origin)
    _check_colocate(config, origin)
    _apply_judge_timeout(config, origin)
    _resolve_old_logprobs(config)


def _resolve_old_logprobs(config: Config) -> None:
    """algo.old_logprobs=auto becomes sampler where the sampler's and the learner's log-probs were measured
    to agree (float32 on both sides, synchronous, no rollout correction), else learner; config.json then
    records which ran."""
    if config.algo.old_logprobs != "auto":
        return
    agree = (
        config.model.dtype == config.rollout.dtype == "float32"
        and config.trainer.max_staleness == 0
        and config.algo.rollout_correction == "none"
    )
    config.algo.old_logprobs = "sampler" if agree else "learner"


def _check_colocate(config: Config, origin: str) -> None:
    """Colocation needs CUDA-IPC weight handles and vLLM sleep/wake between phases, which do not exist
    yet: over NCCL, rollout worker i and learner rank i on one GPU are a duplicate GPU NCCL refuses."""
    if config.resources.colocate:
        raise ConfigError(
            f"{origin}: resources.colocate=true is not supported yet (a rollout worker and a learner rank "
            "cannot share a GPU's NCCL weight sync): set resources.colocate=false"
        )


def _apply_judge_timeout(config: Config, origin: str) -> None:
    """timeouts.judge_request_s is the judge's timeout; reward.judge_timeout_s, its old name, may only
    repeat it (or keep its default), so that two keys never disagree silently."""
    old, default = config.reward.judge_timeout_s, RewardConfig.judge_timeout_s
    if old not in (default, config.timeouts.judge_request_s):
        raise ConfigError(
            f"{origin}: 'reward.judge_timeout_s' ({old}) is now 'timeouts.judge_request_s' "
            f"({config.timeouts.judge_request_s}): set that one"
        )
    config.reward.judge_timeout_s = config.timeouts.judge_request_s


def _check_ranges(config: Config, origin: str) -> None:
    learner, algo = config.learner, config.algo
    checks = [
        ("rollout.top_p", 0 < config.rollout.top_p <= 1, "in (0, 1]"),
        ("algo.gamma", 0 < algo.gamma <= 1, "in (0, 1]"),
        ("algo.rollout_correction_cap", algo.rollout_correction_cap >= 1, ">= 1 (a weight of 1 is on-policy)"),
        ("learner.min_lr_ratio", 0 <= learner.min_lr_ratio <= 1, "in [0, 1]"),
        ("learner.warmup_ratio", 0 <= learner.warmup_ratio < 1, "in [0, 1)"),
        ("pipeline.teacher_bias", 0 <= config.pipeline.teacher_bias < 1, "in [0, 1)"),
        ("reward.max_judge_failure_rate", 0 <= config.reward.max_judge_failure_rate <= 1, "in [0, 1]"),
        (
            "learner.adam_betas",
            len(learner.adam_betas) == 2 and all(0 <= b < 1 for b in learner.adam_betas),
            "two values in [0, 1)",
        ),
        (
            "reward.judge_max_tokens",
            config.reward.judge_max_tokens is None or config.reward.judge_max_tokens > 0,
            "> 0 (or null for the prompt's default)",
        ),
    ]
    for key, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{origin}: '{key}' must be {rule}, got {_get(config, key)}")
    if config.rollout.top_p < 1 or config.rollout.top_k > 0:
        # The learner scores the full tempered distribution (algo/sampling.py): a cut support would make
        # every ratio and the KL about another policy than the one that sampled.
        raise ConfigError(
            f"{origin}: RL samples the whole distribution: rollout.top_p must be 1 and rollout.top_k 0 "
            f"(got {config.rollout.top_p}, {config.rollout.top_k}); tune rollout.temperature instead"
        )
    judge = config.reward.judge
    for needed in _judge_registries()["reward.judge"].declared(judge, "requires", ()):
        if not getattr(config.reward, needed):
            raise ConfigError(f"{origin}: reward.judge={judge} needs 'reward.{needed}'")
    if config.algo.delta_min <= 0 or config.algo.delta_max <= 1 or config.algo.delta_min >= 1:
        raise ConfigError(f"{origin}: algo.delta_min must lie in (0, 1) and algo.delta_max above 1")


def _check_cancellations(config: Config, origin: str) -> None:
    """Settings that each work alone but together silently undo one another."""
    algo, reward = config.algo, config.reward
    if algo.old_logprobs == "sampler" and algo.rollout_correction != "none":
        # The proximal policy is then the behaviour policy: the correction would run and change nothing.
        raise ConfigError(
            f"{origin}: algo.rollout_correction={algo.rollout_correction} with algo.old_logprobs=sampler does "
            "nothing (the importance weight pi_prox / pi_behav is 1): set algo.old_logprobs=learner or "
            "algo.rollout_correction=none"
        )
    if reward.w_consistency == 0 and reward.judge != "rule":
        # The judge would be asked (a model, a GPU, failures that can stop the run) for a verdict that weighs 0.
        raise ConfigError(
            f"{origin}: reward.w_consistency=0 gives the {reward.judge} judge's verdict no weight: "
            "set reward.judge=rule or reward.w_consistency > 0"
        )
    for section in ("trainer", "sft"):  # continue the run in output_dir, or delete it: not both
        if _get(config, f"{section}.resume") and _get(config, f"{section}.overwrite"):
            raise ConfigError(f"{origin}: {section}.resume and {section}.overwrite exclude each other: set one")


def _check_batches(config: Config, origin: str) -> None:
    """Combinations that DeepSpeed, the estimators or vLLM would only refuse after start-up."""
    learner, rollout = config.learner, config.rollout
    estimator = config.algo.advantage_estimator
    if ADVANTAGE_ESTIMATOR_REGISTRY.declared(estimator, "grouped", False) and rollout.n_samples_per_prompt < 2:
        raise ConfigError(
            f"{origin}: algo.advantage_estimator={config.algo.advantage_estimator} needs "
            f"rollout.n_samples_per_prompt > 1 (a group baseline), got {rollout.n_samples_per_prompt}"
        )
    samples = config.trainer.rollout_batch_size * rollout.n_samples_per_prompt
    if samples % learner.train_batch_size:
        raise ConfigError(
            f"{origin}: trainer.rollout_batch_size x rollout.n_samples_per_prompt ({samples}) must be a "
            f"multiple of learner.train_batch_size ({learner.train_batch_size})"
        )
    _check_per_rank(config, "learner.train_batch_size", learner.train_batch_size, origin)
    needed = config.data.max_prompt_tokens + rollout.max_new_tokens
    if rollout.max_model_len < needed:
        raise ConfigError(
            f"{origin}: rollout.max_model_len ({rollout.max_model_len}) must hold "
            f"data.max_prompt_tokens + rollout.max_new_tokens ({needed})"
        )


def _check_per_rank(config: Config, key: str, batch: int, origin: str) -> None:
    per_step = config.learner.num_ranks * config.learner.micro_batch_size  # DeepSpeed: micro x accumulation x ranks
    if batch % per_step:
        raise ConfigError(
            f"{origin}: {key} ({batch}) must be a multiple of learner.num_ranks x learner.micro_batch_size ({per_step})"
        )


def validate_sft(config: Config, origin: str = "config") -> None:
    """What only `r1reward sft` needs: its batch must split over the learner ranks (checked there, so
    that an RL run on another layout is not refused for an SFT setting)."""
    if config.sft.train_batch_size:
        _check_per_rank(config, "sft.train_batch_size", config.sft.train_batch_size, origin)


def validate_pipeline(config: Config, origin: str = "config") -> None:
    """What only `r1reward pipeline` reads: its SFT stage's batch layout, and an annotation stage's teacher."""
    validate_sft(config, origin)
    p = config.pipeline
    if not p.seeds:
        raise ConfigError(f"{origin}: pipeline.seeds must name at least one seed")
    if len(set(p.seeds)) != len(p.seeds):
        raise ConfigError(f"{origin}: pipeline.seeds must be distinct, got {list(p.seeds)}")
    if p.annotate.data:
        if p.source != "data":
            raise ConfigError(f"{origin}: pipeline.annotate.data is read with pipeline.source=data only")
        missing = [key for key in ("teacher_url", "teacher_model") if not getattr(p.annotate, key)]
        if missing:
            raise ConfigError(
                f"{origin}: pipeline.annotate.data is set: the teacher needs 'pipeline.annotate.{missing[0]}'"
            )


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def override(config: Config, **dotted: object) -> Config:
    """A validated copy with `section__key=value` replaced (e.g. override(c, model__path="x"))."""
    merged = OmegaConf.merge(
        OmegaConf.structured(config), OmegaConf.from_dotlist([f"{k.replace('__', '.')}={v}" for k, v in dotted.items()])
    )
    result: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    validate(result, origin="derived config")
    return result
