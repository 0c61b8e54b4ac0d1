"""A search's model and engine, built from its ``SearchConfig`` and plan: the one builder.

The search (``il_tf/learning/search.py``) and the benchmarks build their engines here,
so that what is measured is what a search runs. The memory and compile plan
(``il_tf/learning/plan.py``) sets the engine's segment-wise gradients and the supernet's
wide edges; its graph options are set around the steps by the caller
(``Plan.graph_options``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import keras
import tensorflow as tf

from il_tf.learning.engine import SearchEngine
from il_tf.learning.plan import Plan, choose_plan
from il_tf.learning.search_config import SearchConfig
from il_tf.learning.search_model import SearchModel, build_search_model
from il_tf.spaces.architecture import AuxSkipSettings


@dataclasses.dataclass(frozen=True)
class LearnerShape:
    """What the model needs of a learner: its name, classes, image shape and global batch.

    A ``LearnerData`` has these attributes too, and may stand in for it.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    batch_size: int


def build_model(config: SearchConfig, learners: Sequence[LearnerShape], plan: Plan) -> SearchModel:
    """The search model of ``config``: its supernet, one head per learner, α (Keras' floatx:
    float32 unless a float64 run was asked for, as the equality tests do)."""
    return build_search_model(
        plan.supernet(config),
        [d.num_classes for d in learners],
        [d.image_shape for d in learners],
        seed=config.seed,
        head_names=[f"head_{d.name}" for d in learners],
        mixed_precision=config.mixed_precision,
        # α and β stay in floatx (float32) whatever the layers compute in (bfloat16).
        arch_dtype=keras.config.floatx(),
        aux_skip=AuxSkipSettings(),
    )


def build_engine(
    config: SearchConfig,
    learners: Sequence[LearnerShape],
    strategy: tf.distribute.Strategy,
    total_weight_steps: int,
    plan: Plan | None = None,
    total_arch_steps: int = 1,
) -> SearchEngine:
    """The search engine of ``config`` for these learners under ``strategy``.

    ``total_weight_steps`` is the length of the weights' cosine schedule,
    ``total_arch_steps`` that of α's (when ``OptimizerSettings.arch_lr_min`` is set); ``plan`` the
    memory and compile plan (default: ``choose_plan(config, learners)``).
    """
    plan = plan or choose_plan(config, learners)
    return SearchEngine(
        strategy,
        functools.partial(build_model, config, learners, plan),
        config.make_schedule(),
        config.method,
        float(config.proximity),
        config.optimizers,
        total_weight_steps=total_weight_steps,
        jit_compile=config.jit_compile,
        segmented_gradients=plan.segmented_gradients,
        total_arch_steps=total_arch_steps,
    )
