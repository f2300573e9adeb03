"""vLLM general plugin (entry point `vllm.general_plugins`): registers the gloo weight-transfer
engine in every vLLM process, worker processes included. Safe to call more than once."""


def register() -> None:
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

    from r1reward.sync.gloo_engine import BACKEND

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, "r1reward.sync.gloo_engine", "GlooWeightTransferEngine")
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(
            BACKEND, "r1reward.sync.gloo_engine", "GlooTrainerWeightTransferEngine")
