"""Per-epoch schedules of the evaluation runs: learning rate and drop-path rate.

As in the reference DARTS training scripts, both change once per epoch (at its start) and
are functions of the 0-based epoch index e of E epochs:

- ``cosine``:      lr_min + (lr - lr_min) · (1 + cos(π e / E)) / 2  (CIFAR: CosineAnnealingLR)
- ``exponential``: lr · decay^e                                      (ImageNet: StepLR(1, 0.97))
- ``constant``:    lr
- drop-path:       rate · e / E  (0 in the first epoch)
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("cosine", "exponential", "constant")


def learning_rate(
    epoch: int,
    epochs: int,
    base: float,
    schedule: str = "cosine",
    minimum: float = 0.0,
    decay: float = 0.97,
) -> float:
    """The learning rate of (0-based) ``epoch`` out of ``epochs``."""
    if schedule == "cosine":
        return minimum + (base - minimum) * (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0
    if schedule == "exponential":
        return base * decay**epoch
    if schedule == "constant":
        return base
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; allowed: {list(LR_SCHEDULES)}")


def drop_path_rate(epoch: int, epochs: int, final_rate: float) -> float:
    """The drop-path rate of (0-based) ``epoch``: ramped linearly from 0 towards ``final_rate``."""
    return final_rate * epoch / epochs
