"""vLLM general plugin (entry point `vllm.general_plugins`): registers the project's weight-transfer
engines (gloo and NCCL transports) in every vLLM process, worker processes included. Safe to call more than once.

In vLLM's own child processes (the engine core, its workers) it also starts a watch that ends the
process when its parent is gone, so a rollout actor killed hard leaves no engine behind."""


def register() -> None:
    import multiprocessing

    if multiprocessing.parent_process() is not None:  # spawned by vLLM: lives only as long as its parent
        from r1reward.lifetime import exit_with_parent

        exit_with_parent()
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

    from r1reward.sync.backend import GLOO_BACKEND, NCCL_BACKEND

    for backend, transport in ((GLOO_BACKEND, "Gloo"), (NCCL_BACKEND, "Nccl")):
        if backend not in WeightTransferEngineFactory._registry:
            WeightTransferEngineFactory.register_engine(
                backend, "r1reward.sync.engine", f"{transport}WeightTransferEngine"
            )
        if backend not in WeightTransferTrainerFactory._registry:
            WeightTransferTrainerFactory.register_engine(
                backend, "r1reward.sync.engine", f"{transport}TrainerWeightTransferEngine"
            )
