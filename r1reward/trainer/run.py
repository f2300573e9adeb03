"""The life of a run that holds actors: setup() -> fit() -> shutdown()."""

from __future__ import annotations

from typing import Any


class ActorRun:
    """setup() -> fit() -> shutdown(): the actor groups and their placement group are released even when
    a step fails, so a failed run never leaves resources held on the cluster. `with run: run.fit(); ...`
    does the same and keeps the actors for use after fit (the pipeline scores on the rollout workers)."""

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

    def __enter__(self) -> ActorRun:
        """setup(); a setup that fails part-way releases what it started before the error propagates."""
        try:
            self.setup()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def run(self) -> dict[str, Any]:
        with self:
            return self.fit()
