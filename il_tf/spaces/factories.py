"""gin-configurable constructors of the search spaces' supernets.

Keras layers cannot be decorated with ``gin.configurable`` directly (gin's wrapper
hides their constructor signature from Keras), so gin configures these factories:
``SearchConfig.supernet = @darts_supernet`` and ``darts_supernet.channels = 16``.

PC-DARTS is ``darts_supernet.partial_channels = 4`` (edge normalization follows);
P-DARTS's per-stage settings (``num_cells``, per-edge ``ops``/``reduce_ops``,
``skip_dropout``, ``max_skip_normal``) are passed by the progressive driver
(:mod:`il_tf.learning.progressive`), overriding the gin bindings stage by stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import keras

# Registers @choice_supernet (a user's Keras builder as the supernet) with gin.
from il_tf.spaces.choice_space import choice_supernet  # noqa: F401
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
    ops: Sequence[str] | Sequence[Sequence[str]] = DARTS_OPS,
    activation: str = "relu",
    reduce_ops: Sequence[str] | Sequence[Sequence[str]] | None = None,
    partial_channels: int = 1,
    edge_normalization: bool | None = None,
    skip_dropout: float = 0.0,
    dropout_seed: int = 0,
    max_skip_normal: int | None = None,
    wide_edges: bool = False,
    cell_parts: int = 1,
) -> keras.layers.Layer:
    """The DARTS search supernet (docs/design.md §5); defaults are the DARTS search settings.

    ``partial_channels`` K (PC-DARTS: 4) sends 1/K of each edge's channels through
    the mixed op; ``edge_normalization`` (None = on when K > 1) adds the β logits.
    ``ops``/``reduce_ops`` take one op list or one list per edge; ``skip_dropout``
    and ``max_skip_normal`` are P-DARTS's skip-connect dropout and cap.
    ``wide_edges=True`` computes the edges that leave a state as one wide op per
    candidate op (the same values, a smaller graph: see the supernet).
    ``cell_parts`` cuts each cell's body into that many segments for the segment-wise
    computations (less memory for the exact chain). See
    :class:`~il_tf.spaces.darts_supernet.DartsSupernet`.
    """

    def as_tuple(o):
        if o is None or isinstance(o, str):
            return o
        return tuple(x if isinstance(x, str) else tuple(x) for x in o)

    return DartsSupernet(
        channels=channels,
        num_cells=num_cells,
        steps=steps,
        multiplier=multiplier,
        stem_multiplier=stem_multiplier,
        ops=as_tuple(ops),
        activation=activation,
        reduce_ops=as_tuple(reduce_ops),
        partial_channels=partial_channels,
        edge_normalization=edge_normalization,
        skip_dropout=skip_dropout,
        dropout_seed=dropout_seed,
        max_skip_normal=max_skip_normal,
        wide_edges=wide_edges,
        cell_parts=cell_parts,
    )


@gin.configurable
def nb201_supernet(
    channels: int = 16,
    cells_per_stage: int = 5,
    ops: Sequence[str] = NB201_OPS,
    activation: str = "relu",
    derivation: str = "argmax",
) -> keras.layers.Layer:
    """The NAS-Bench-201 search supernet (docs/design.md §5); defaults are the benchmark's skeleton.

    ``derivation``: ``argmax`` (``none`` a candidate) or ``exclude_none``.
    """
    return NB201Supernet(
        channels=channels,
        cells_per_stage=cells_per_stage,
        ops=tuple(ops),
        activation=activation,
        derivation=derivation,
    )
