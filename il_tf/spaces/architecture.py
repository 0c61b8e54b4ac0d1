"""Architecture parameters: the continuous logits (α, and β where a space has them).

Besides the logits, an :class:`Architecture` may hold the weight of the auxiliary skip
connection of DARTS- (:class:`AuxSkipSettings`): a number, not a learned parameter,
that the search sets from its progress and the supernets read from the architecture
mapping under the key :data:`AUX_SKIP`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import gin
import keras
import numpy as np
import tensorflow as tf

from il_tf.settings_checks import check_number

# DARTS initializes α as 1e-3 · N(0, 1).
ARCH_INIT_STDDEV = 1e-3
#: The key of the auxiliary skip weight in an architecture mapping (absent when off).
AUX_SKIP = "aux_skip"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AuxSkipSettings:
    """The auxiliary skip connection of DARTS- (gin: ``AuxSkipSettings.start = 1.0``).

    On every edge of the supernet the output becomes Σ_o softmax(α)_o·o(x) + β_aux·x,
    with β_aux decaying linearly from ``start`` at the beginning of the search to 0 at
    its end. The skip path carries the gradient that would otherwise make the
    ``skip_connect`` op win the softmax, so α can rank the other ops fairly (DARTS-
    uses start 1). 0, the default, turns it off. The derivation ignores the path:
    it is not a candidate op.

    Attributes:
      start: β_aux at the first iteration (>= 0; 0 = off).
    """

    start: float = 0.0

    def __post_init__(self):
        check_number("AuxSkipSettings", "start", self.start, minimum=0)

    @property
    def enabled(self) -> bool:
        return self.start > 0

    def value_at(self, progress: float) -> float:
        """β_aux at ``progress`` (fraction of the search done, clipped to [0, 1])."""
        p = min(max(float(progress), 0.0), 1.0)
        return float(self.start) * (1.0 - p)


class Architecture(keras.layers.Layer):
    """Holds one trainable variable per named architecture tensor of a search space.

    Kept apart from the network weights so that the weight optimizer never touches
    them, and trackable so that checkpoints carry them. With ``aux_skip`` settings
    that are on, it also holds β_aux, a non-trainable scalar outside
    ``arch_variables`` (no optimizer or hypergradient sees it), set by
    :meth:`set_progress` and passed to the supernet as ``arch[AUX_SKIP]``.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        seed: int | None = None,
        aux_skip: AuxSkipSettings | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.names = tuple(shapes)
        self.arch_variables = [
            self.add_weight(
                name=name,
                shape=tuple(shape),
                initializer=keras.initializers.RandomNormal(
                    stddev=ARCH_INIT_STDDEV, seed=None if seed is None else seed + i
                ),
                trainable=True,
            )
            for i, (name, shape) in enumerate(shapes.items())
        ]
        self.aux_skip_settings = aux_skip if aux_skip is not None and aux_skip.enabled else None
        self.aux_skip = None
        if self.aux_skip_settings is not None:
            self.aux_skip = self.add_weight(
                name=AUX_SKIP,
                shape=(),
                initializer=keras.initializers.Constant(self.aux_skip_settings.start),
                trainable=False,
            )
        self.built = True

    def _with_aux(self, mapping: dict) -> dict:
        if self.aux_skip is not None:
            # Read where the mapping is used (inside compiled steps: at every call).
            mapping[AUX_SKIP] = tf.identity(self.aux_skip.value)
        return mapping

    def tensors(self) -> dict[str, tf.Tensor]:
        """The current values, by name (reads the variables), with β_aux when on."""
        return self._with_aux(
            {name: v.value for name, v in zip(self.names, self.arch_variables, strict=True)}
        )

    def numpy(self) -> dict[str, np.ndarray]:
        """The current logits as numpy arrays, by name (β_aux is not a logit)."""
        return {
            name: np.asarray(v.numpy())
            for name, v in zip(self.names, self.arch_variables, strict=True)
        }

    def as_dict(self, values) -> dict[str, tf.Tensor]:
        """Names a list of tensors given in variable order; adds β_aux when on."""
        return self._with_aux(dict(zip(self.names, values, strict=True)))

    def assign(self, values: Mapping[str, np.ndarray]) -> None:
        """Sets the logits from arrays (e.g. a loaded genotype's α)."""
        for name, v in zip(self.names, self.arch_variables, strict=True):
            v.assign(np.asarray(values[name], dtype=v.dtype))

    def set_progress(self, progress: float) -> None:
        """Sets β_aux to its value at ``progress`` (fraction of the search done); no-op if off."""
        if self.aux_skip is not None:
            self.aux_skip.assign(self.aux_skip_settings.value_at(progress))

    def aux_skip_value(self) -> float | None:
        """The current β_aux (None when the auxiliary skip is off)."""
        return None if self.aux_skip is None else float(self.aux_skip.numpy())
