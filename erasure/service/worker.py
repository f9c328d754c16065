"""The service's worker: pending approved requests in batches, as `run --pending` does."""

from __future__ import annotations

from typing import Any


def start(app: Any) -> Any:
    """Start the worker task (when `[service] worker_interval` is set); its handle."""
    raise NotImplementedError("the worker is not built yet")


async def stop(app: Any, task: Any) -> None:
    task.cancel()
