"""Mixed into vLLM's worker class (`worker_extension_cls`): read-only views for sync checks, and loading a
Hugging Face checkpoint into the running engine (the same `load_weights` path the weight sync takes)."""

from __future__ import annotations


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
