"""How a search compiles: the graph optimizer's options while it runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf


def grappler_options(graph_optimizer: bool, constant_folding: bool) -> dict[str, bool]:
    """Grappler's options for these ``SearchConfig`` settings ({}: TensorFlow's defaults)."""
    options = {}
    if not graph_optimizer:
        options["disable_meta_optimizer"] = True
    if not constant_folding:
        options["constant_folding"] = False
    return options


@contextlib.contextmanager
def graph_options(graph_optimizer: bool, constant_folding: bool) -> Iterator[None]:
    """Sets grappler's options for the block, and restores the previous ones after it."""
    # Grappler's options are process-wide and read when a function first runs, so
    # they are set for the whole search.
    options = grappler_options(graph_optimizer, constant_folding)
    if not options:
        yield
        return
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options(options)
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {
                "disable_meta_optimizer": previous.get("disable_meta_optimizer", False),
                "constant_folding": previous.get("constant_folding", True),
            }
        )
