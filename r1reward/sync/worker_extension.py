"""Mixed into vLLM's worker class (`worker_extension_cls`): read-only views for sync checks, loading a
Hugging Face checkpoint into the running engine (the same `load_weights` path the weight sync takes),
and one fault injection for the tests."""

from __future__ import annotations

from typing import Any


class WeightSyncExtension:
    def r1reward_received_checksums(self) -> list[tuple[int, int]]:
        engine = getattr(self, "weight_transfer_engine", None)
        return [tuple(c) for c in getattr(engine, "received_checksums", [])]

    def r1reward_load_checkpoint(self, path: str) -> int:
        """Every tensor of the checkpoint's safetensors files into the model; returns how many."""
        from pathlib import Path

        from safetensors.torch import load_file

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path}")
        loaded = 0
        # Inside a weight-update session, as the sync loads: vLLM restores the layers it repacked after
        # the first load (the CPU backend packs linear weights), loads, then packs again.
        self.start_weight_update()
        for file in files:
            weights = load_file(str(file))
            self.model_runner.model.load_weights(weights.items())
            loaded += len(weights)
        self.finish_weight_update()
        return loaded

    def r1reward_debug_corrupt_next_update(self) -> None:
        """Tests only: the first bucket of the next update is overwritten on arrival, as bytes
        corrupted on the way would be (the sender's checksums are those of the true bytes)."""
        engine = self.weight_transfer_engine
        engine.group = _CorruptFirstBroadcast(engine)


class _CorruptFirstBroadcast:
    """Stands in for the engine's group for one update: the first tensor received is overwritten once it
    has arrived; every later broadcast passes through, and the next update has the real group."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.group, self.armed = engine, engine.group, True
        self.device = self.group.device

    def broadcast(self, tensor: Any) -> Any:
        work = self.group.broadcast(tensor)
        if not self.armed:
            return work
        self.armed = False
        self.engine.group = self.group
        return _Overwritten(work, tensor)


class _Overwritten:
    def __init__(self, work: Any, tensor: Any) -> None:
        self.work, self.tensor = work, tensor

    def wait(self) -> Any:
        done = self.work.wait()
        self.tensor.fill_(0x7F)  # every float32 becomes 3.4e38: a model that loaded it would say so
        return done
