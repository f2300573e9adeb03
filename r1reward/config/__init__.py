from r1reward.config.load import ConfigError, load_config, override, to_yaml, validate
from r1reward.config.schema import (
    AlgoConfig,
    Config,
    DataConfig,
    LearnerConfig,
    ModelConfig,
    ResourcesConfig,
    RewardConfig,
    RolloutConfig,
    TrainerConfig,
)

__all__ = [
    "AlgoConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LearnerConfig",
    "ModelConfig",
    "ResourcesConfig",
    "RewardConfig",
    "RolloutConfig",
    "TrainerConfig",
    "load_config",
    "override",
    "to_yaml",
    "validate",
]
