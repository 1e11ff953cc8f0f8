"""Data loading over several processes (devices x nodes): ``data.batch_size`` is the global batch, so a run
on 8 GPUs takes the same optimisation steps as one on a single device."""

from __future__ import annotations

from typing import Any


def per_device_batch(batch_size: int, trainer: Any | None) -> int:
    """Each process's share of the global ``batch_size`` (the whole of it outside a trainer or in one process).
    Lightning's distributed sampler then gives each process its own part of every epoch."""
    world = getattr(trainer, "world_size", 1) if trainer is not None else 1
    if batch_size % world:
        raise ValueError(
            f"data.batch_size={batch_size} (the global batch) does not split over {world} processes "
            f"(trainer.devices x trainer.num_nodes); use a multiple of {world}"
        )
    return batch_size // world
