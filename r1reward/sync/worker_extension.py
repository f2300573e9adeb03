"""Mixed into vLLM's worker class (`worker_extension_cls`): read-only views for sync checks."""

from __future__ import annotations


class WeightSyncExtension:
    def r1reward_received_checksums(self) -> list[tuple[int, int]]:
        engine = getattr(self, "weight_transfer_engine", None)
        return [tuple(c) for c in getattr(engine, "received_checksums", [])]
