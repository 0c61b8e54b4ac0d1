"""gin-configurable constructors of the search spaces' supernets.

Keras layers cannot be decorated with ``gin.configurable`` directly (gin's wrapper
hides their constructor signature from Keras), so gin configures these factories:
``SearchConfig.supernet = @darts_supernet`` and ``darts_supernet.channels = 16``.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras

from il_tf.spaces.darts_supernet import DartsSupernet
from il_tf.spaces.genotypes import DARTS_OPS
from il_tf.spaces.nb201_genotype import NB201_OPS
from il_tf.spaces.nb201_supernet import NB201Supernet


@gin.configurable
def darts_supernet(
    channels: int = 16,
    num_cells: int = 8,
    steps: int = 4,
    multiplier: int = 4,
    stem_multiplier: int = 3,
    ops: Sequence[str] = DARTS_OPS,
    activation: str = "relu",
) -> keras.layers.Layer:
    """The DARTS search supernet (DESIGN §2); defaults are the DARTS search settings."""
    return DartsSupernet(
        channels=channels,
        num_cells=num_cells,
        steps=steps,
        multiplier=multiplier,
        stem_multiplier=stem_multiplier,
        ops=tuple(ops),
        activation=activation,
    )


@gin.configurable
def nb201_supernet(
    channels: int = 16,
    cells_per_stage: int = 5,
    ops: Sequence[str] = NB201_OPS,
    activation: str = "relu",
) -> keras.layers.Layer:
    """The NAS-Bench-201 search supernet (DESIGN §2); defaults are the benchmark's skeleton."""
    return NB201Supernet(
        channels=channels, cells_per_stage=cells_per_stage, ops=tuple(ops), activation=activation
    )
