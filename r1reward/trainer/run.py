"""The life of a run that holds actors: setup() -> fit() -> shutdown()."""

from __future__ import annotations

from typing import Any


class ActorRun:
    """setup() -> fit() -> shutdown(): the actor groups and their placement group are released even when
    a step fails, so a failed run never leaves resources held on the cluster."""

    placement_group: Any = None

    def groups(self) -> list[Any]:
        """The started role groups (each has `close()`)."""
        return []

    def setup(self) -> None:
        raise NotImplementedError

    def fit(self) -> dict[str, Any]:
        raise NotImplementedError

    def shutdown(self) -> None:
        from r1reward.placement.groups import remove_group  # Ray is imported only once a run has started

        for group in self.groups():
            group.close()
        remove_group(self.placement_group)
        self.placement_group = None

    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            return self.fit()
        finally:
            self.shutdown()
