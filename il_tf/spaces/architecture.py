"""Architecture parameters: the continuous logits (α, and β where a space has them)."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

# DARTS initializes α as 1e-3 · N(0, 1).
ARCH_INIT_STDDEV = 1e-3


class Architecture(keras.layers.Layer):
    """Holds one trainable variable per named architecture tensor of a search space.

    Kept apart from the network weights so that the weight optimizer never touches
    them, and trackable so that checkpoints carry them.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], seed: int | None = None, **kwargs):
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
        self.built = True

    def tensors(self) -> dict[str, tf.Tensor]:
        """The current values, by name (reads the variables)."""
        return {name: v.value for name, v in zip(self.names, self.arch_variables, strict=True)}

    def numpy(self) -> dict[str, np.ndarray]:
        """The current values as numpy arrays, by name."""
        return {
            name: np.asarray(v.numpy())
            for name, v in zip(self.names, self.arch_variables, strict=True)
        }

    def as_dict(self, values) -> dict[str, tf.Tensor]:
        """Names a list of tensors given in variable order."""
        return dict(zip(self.names, values, strict=True))

    def assign(self, values: Mapping[str, np.ndarray]) -> None:
        """Sets the logits from arrays (e.g. a loaded genotype's α)."""
        for name, v in zip(self.names, self.arch_variables, strict=True):
            v.assign(np.asarray(values[name], dtype=v.dtype))
