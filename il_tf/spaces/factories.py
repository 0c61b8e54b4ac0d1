"""gin-configurable constructors of the search spaces' supernets.

Keras layers cannot be decorated with ``gin.configurable`` directly (gin's wrapper
hides their constructor signature from Keras), so gin configures these factories:
``SearchConfig.supernet = @darts_supernet`` and ``darts_supernet.channels = 16``. Each
takes exactly its supernet's constructor parameters (by keyword), with the same
defaults: the supernet classes document them.

PC-DARTS is ``darts_supernet.partial_channels = 4`` (edge normalization follows);
P-DARTS's per-stage settings (``num_cells``, per-edge ``ops``/``reduce_ops``,
``skip_dropout``, ``max_skip_normal``) are passed by the progressive driver
(:mod:`il_tf.learning.progressive`), overriding the gin bindings stage by stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import gin
import keras

# Registers @choice_supernet (a user's Keras builder as the supernet) with gin.
from il_tf.spaces.choice_space import choice_supernet  # noqa: F401
from il_tf.spaces.darts_supernet import DartsSupernet
from il_tf.spaces.nb201_supernet import NB201Supernet


def _factory(layer: type[keras.layers.Layer], name: str, doc: str) -> Callable:
    """A gin-configurable ``name(**settings)`` building ``layer(**settings)``.

    Its signature is the constructor's parameters, keyword-only (gin checks bindings
    against it); an unknown setting is a TypeError naming it.
    """
    parameters = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in list(inspect.signature(layer.__init__).parameters.values())[1:]
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]
    signature = inspect.Signature(parameters, return_annotation=keras.layers.Layer)

    def factory(**settings) -> keras.layers.Layer:
        signature.bind(**settings)
        return layer(**settings)

    factory.__signature__ = signature
    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = doc
    return gin.configurable(name)(factory)


darts_supernet = _factory(
    DartsSupernet,
    "darts_supernet",
    """The DARTS search supernet (docs/design.md, "Search spaces"); :class:`DartsSupernet`.

    The defaults are the DARTS search settings. ``partial_channels`` K (PC-DARTS: 4)
    sends 1/K of each edge's channels through the mixed op; ``ops``/``reduce_ops`` take
    one op list or one list per edge; ``skip_dropout`` and ``max_skip_normal`` are
    P-DARTS's skip-connect dropout and cap; ``wide_edges`` and ``cell_parts`` change how
    the same values are computed (None for ``wide_edges``: the search's plan chooses,
    ``il_tf/learning/plan.py``).
    """,
)

nb201_supernet = _factory(
    NB201Supernet,
    "nb201_supernet",
    """The NAS-Bench-201 search supernet (docs/design.md, "Search spaces"); :class:`NB201Supernet`.

    The defaults are the benchmark's skeleton; ``derivation``: ``argmax`` (``none`` a
    candidate) or ``exclude_none``.
    """,
)
