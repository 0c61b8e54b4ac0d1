"""Regularizers of the architecture logits, as gradients added to the hypergradient.

β-decay (β-DARTS): the penalty ``weight(progress) · mean_edges logsumexp(α_edge)`` on
every architecture tensor of rank 2 (rows = edges, columns = ops). Its gradient,
``weight · softmax(α_edge) / edges``, pulls every logit of an edge down in proportion to
its softmax, so no op's logit runs away from the others: the softmax stays smooth and
the mass cannot pile up on one parameter-free op. It is added to the architecture
gradient whatever the hypergradient method and schedule, so it works with all of them.

``progress`` is the fraction of the search done, in [0, 1]; the weight may grow
linearly with it (the β-DARTS schedule) or stay constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gin
import tensorflow as tf

BETA_DECAY_SCHEDULES = ("constant", "linear")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BetaDecaySettings:
    """The β-decay penalty's weight and schedule (gin: ``BetaDecaySettings.weight = 0.5``).

    Attributes:
      weight: λ, the penalty's weight at the end of the search (0 turns it off).
      schedule: ``constant`` (λ throughout) or ``linear`` (from ``start_weight`` at
        progress 0 to λ at progress 1).
      start_weight: the weight at progress 0 with the ``linear`` schedule.
    """

    weight: float = 0.0
    schedule: str = "linear"
    start_weight: float = 0.0

    def __post_init__(self):
        for name in ("weight", "start_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"BetaDecaySettings.{name} must be a number >= 0, got {value!r} "
                    f"(in gin: BetaDecaySettings.{name} = 0.5)"
                )
        if self.schedule not in BETA_DECAY_SCHEDULES:
            raise ValueError(
                f"BetaDecaySettings.schedule must be one of {list(BETA_DECAY_SCHEDULES)}, got "
                f"{self.schedule!r} (in gin: BetaDecaySettings.schedule = 'linear')"
            )

    def weight_at(self, progress: float) -> float:
        """λ at ``progress`` (fraction of the search done, clipped to [0, 1])."""
        p = min(max(float(progress), 0.0), 1.0)
        if self.schedule == "constant":
            return float(self.weight)
        return float(self.start_weight + (self.weight - self.start_weight) * p)


def beta_decay_penalty(
    arch_tensors: Sequence[tf.Tensor],
    progress: float,
    settings: BetaDecaySettings | None = None,
) -> tf.Tensor:
    """The β-decay penalty ``λ(progress) · Σ_tensors mean_edges logsumexp(α_edge)``."""
    settings = settings or BetaDecaySettings()
    weight = settings.weight_at(progress)
    total = tf.constant(0.0, tf.float64)
    for a in arch_tensors:
        if a.shape.rank == 2:
            total += tf.cast(tf.reduce_mean(tf.reduce_logsumexp(a, axis=-1)), tf.float64)
    return weight * total


def beta_decay_gradients(
    arch_tensors: Sequence[tf.Tensor],
    progress: float,
    settings: BetaDecaySettings | None = None,
) -> list[tf.Tensor]:
    """Gradients of :func:`beta_decay_penalty`, one per tensor, to add to the hypergradient.

    Tensors that are not of rank 2 (e.g. PC-DARTS edge weights β) get zeros.
    ``settings`` defaults to the gin-bound :class:`BetaDecaySettings` (off unless a
    weight is bound).
    """
    settings = settings or BetaDecaySettings()
    weight = settings.weight_at(progress)
    out = []
    for a in arch_tensors:
        a = tf.convert_to_tensor(a)
        if a.shape.rank != 2 or weight == 0.0:
            out.append(tf.zeros_like(a))
            continue
        edges = tf.cast(tf.shape(a)[0], a.dtype)
        out.append(tf.cast(weight, a.dtype) * tf.nn.softmax(a, axis=-1) / edges)
    return out
