"""The search engine: variables, optimizers and the compiled steps of one search iteration.

One iteration (docs/design.md, "Interleaving learning and one search iteration") is
1. the architecture step: a hypergradient through the chain (a method of
   ``il_tf/learning/hypergradients.py`` over the compiled step functions of
   ``il_tf/learning/step_functions.py``), applied with Adam;
2. the weight steps: the real encoder goes through the same stages (SGD with
   momentum, cosine schedule, clipping), each stage on its learners' batches,
   each head updated by its own learner only.

Gradients are computed inside ``strategy.run`` (summed across replicas there)
and applied once, in cross-replica context, so that clipping sees the global
gradient and no gradient is summed twice.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import gin
import keras
import tensorflow as tf

from il_tf.learning import arch_regularizers, hypergradients, objective
from il_tf.learning.objective import ChainSettings, LossStats
from il_tf.learning.reporting import RunningStats
from il_tf.learning.search_model import SearchModel
from il_tf.learning.stage_schedule import Schedule
from il_tf.learning.step_functions import StepFunctions
from il_tf.settings_checks import check_number


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """Weight and architecture optimizers (DARTS search defaults, docs/design.md, "Reference settings").

    ``arch_lr_min``: None keeps the architecture learning rate at ``arch_lr`` (as
    DARTS); a number decays it from ``arch_lr`` to that value along a cosine over the
    search's architecture steps (as the weights' from ``weight_lr`` to ``weight_lr_min``),
    so that the last epochs change α less and the derived cell settles.
    """

    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    clip_norm: float = 5.0
    arch_lr: float = 3e-4
    arch_lr_min: float | None = None
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3

    def __post_init__(self):
        owner = "OptimizerSettings"
        for name in ("weight_lr", "arch_lr"):
            check_number(owner, name, getattr(self, name), minimum=0, above_minimum=True)
        for name in ("weight_lr_min", "weight_decay", "clip_norm", "arch_weight_decay"):
            check_number(owner, name, getattr(self, name), minimum=0)
        if self.arch_lr_min is not None:
            check_number(
                owner,
                "arch_lr_min",
                self.arch_lr_min,
                minimum=0,
                maximum=self.arch_lr,
                note=" (at most arch_lr), or None for a constant arch_lr",
            )
        check_number(owner, "momentum", self.momentum, minimum=0, maximum=1, below_maximum=True)
        for name in ("arch_beta1", "arch_beta2"):
            check_number(owner, name, getattr(self, name), minimum=0, maximum=1, below_maximum=True)

    def arch_learning_rate(
        self, total_arch_steps: int
    ) -> float | keras.optimizers.schedules.LearningRateSchedule:
        """Adam's learning rate for α: ``arch_lr``, or its cosine decay over the given steps."""
        if self.arch_lr_min is None:
            return self.arch_lr
        return keras.optimizers.schedules.CosineDecay(
            self.arch_lr,
            decay_steps=max(1, total_arch_steps),
            alpha=self.arch_lr_min / self.arch_lr,
        )


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN or inf; the step was not applied.

    ``phase`` is ``"architecture"`` or ``"weights"``; ``stage`` and ``step`` locate
    a weight step in the iteration's chain and ``learners`` are the indices of the
    learners whose loss was not finite (all of the stage's when only the
    gradient was).
    """

    def __init__(
        self,
        message: str,
        phase: str,
        stage: int | None = None,
        step: int | None = None,
        learners: tuple[int, ...] = (),
    ):
        super().__init__(message)
        self.phase = phase
        self.stage = stage
        self.step = step
        self.learners = learners

    def describe(self, learner_names: Sequence[str]) -> str:
        """What went wrong and where, with the learners named."""
        names = ", ".join(repr(learner_names[k]) for k in self.learners)
        if self.phase == "architecture":
            return str(self)
        return (
            f"non-finite training loss or gradient in stage {self.stage}, step {self.step}, "
            f"learner {names}"
        )


@dataclasses.dataclass(frozen=True)
class IterationResult:
    """Per-learner statistics of one search iteration.

    ``val[k]``: learner k's validation statistics from the architecture step (None
    when the iteration took no architecture step); ``train[k]``: the statistics of
    each of learner k's weight steps, in order.
    """

    val: list[LossStats | None]
    train: list[list[LossStats]]


def apply_updates(
    strategy: tf.distribute.Strategy,
    optimizer: keras.optimizers.Optimizer,
    grads,
    variables: Sequence[keras.Variable],
    count: bool = True,
) -> None:
    """Applies already-summed gradients with a Keras optimizer, in cross-replica context.

    ``optimizer.apply_gradients`` would sum the gradients over replicas once more
    (and clip before summing); here each device applies its identical copy of the
    global gradient through the optimizer's own ``update_step``. ``count`` = False
    leaves the optimizer's step count (and so its learning rate) as it is.
    """
    lr = optimizer.learning_rate
    for grad, variable in zip(grads, variables, strict=True):
        strategy.extended.update(
            variable.value,
            lambda var, g: optimizer.update_step(g, var, lr),
            args=(grad,),
            group=False,
        )
    if count:
        optimizer.iterations.assign_add(1)


def _all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


class SearchEngine:
    """Owns the search model, both optimizers and the compiled step functions.

    Args:
      strategy: the ``tf.distribute`` strategy every variable is created under.
      build_model: creates the (built) :class:`SearchModel`; called in the scope.
      schedule: the stages of one iteration.
      method: the hypergradient method's name (``hypergradients.METHODS``).
      proximity: λ of the chain's proximity term λ‖W − W_anchor‖².
      optimizers: learning rates, weight decay, clipping and the rest.
      total_weight_steps: length of the cosine schedule, in weight steps.
      total_arch_steps: length of the architecture learning rate's cosine schedule,
        in architecture steps (used when ``optimizers.arch_lr_min`` is set).
      jit_compile: compile the steps with XLA.
      segmented_gradients: every gradient one supernet segment at a time,
        recomputing activations (``StepFunctions``): less memory, one more forward.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        build_model: Callable[[], SearchModel],
        schedule: Schedule,
        method: str,
        proximity: float,
        optimizers: OptimizerSettings,
        total_weight_steps: int,
        jit_compile: bool = False,
        segmented_gradients: bool = False,
        total_arch_steps: int = 1,
    ):
        # An unknown method fails before anything is built.
        self.method = hypergradients.get_method(method)
        self.strategy = strategy
        self.schedule = schedule
        self.chain = ChainSettings(
            proximity=float(proximity),
            weight_decay=optimizers.weight_decay,
            clip_norm=optimizers.clip_norm,
        )
        self.optimizers = optimizers
        self.total_weight_steps = max(1, total_weight_steps)
        with strategy.scope():
            self.model = build_model()
            lr = keras.optimizers.schedules.CosineDecay(
                optimizers.weight_lr,
                decay_steps=max(1, total_weight_steps),
                alpha=optimizers.weight_lr_min / optimizers.weight_lr,
            )
            # L2 weight decay is added to the gradients here (coupled, as in the
            # reference PyTorch SGD/Adam), not by the optimizers (decoupled).
            self.weight_optimizer = keras.optimizers.SGD(lr, momentum=optimizers.momentum)
            self.arch_optimizer = keras.optimizers.Adam(
                optimizers.arch_learning_rate(total_arch_steps),
                beta_1=optimizers.arch_beta1,
                beta_2=optimizers.arch_beta2,
            )
            self.weight_variables = list(self.model.encoder.trainable_variables) + [
                v for h in self.model.heads for v in h.trainable_variables
            ]
            self.weight_optimizer.build(self.weight_variables)
            self.arch_optimizer.build(self.model.arch.arch_variables)
            self.steps = StepFunctions(
                strategy, self.model, self.chain, jit_compile, segmented_gradients
            )
            # The encoder as the current stage received it (W_anchor), flat.
            self.anchor = tf.Variable(
                tf.zeros(sum(self.steps.encoder_layout.sizes), self.weight_variables[0].dtype),
                trainable=False,
            )
        self._apply_arch = tf.function(self._apply_arch_fn, jit_compile=jit_compile)
        self._weight_steps: dict[int | None, Callable] = {}
        self._prepare = tf.function(self._prepare_fn, autograph=False)
        self._jit_compile = jit_compile
        self._set_anchor = tf.function(self._set_anchor_fn)

    # -- architecture step -------------------------------------------------------

    def chain_inputs(self, train_batches, val_batches) -> hypergradients.ChainInputs:
        """The method's inputs at the current weights and learning rate."""
        arch, enc, heads = self.steps.read()
        return hypergradients.ChainInputs(
            schedule=self.schedule,
            arch=arch,
            enc=enc,
            heads=heads,
            train_batches=train_batches,
            val_batches=val_batches,
            lr=tf.convert_to_tensor(self.weight_optimizer.learning_rate),
        )

    def _apply_arch_fn(self, grads, regularizer):
        model, decay = self.model, self.optimizers.arch_weight_decay

        def replica_fn(grads, regularizer):
            arch = model.arch_tensors()
            grads = [g + r + decay * a for g, r, a in zip(grads, regularizer, arch, strict=True)]
            return grads, _all_finite(grads)

        grads, ok = self.strategy.run(replica_fn, args=(grads, regularizer))
        ok = self.strategy.experimental_local_results(ok)[0]

        def apply():
            apply_updates(self.strategy, self.arch_optimizer, grads, model.arch.arch_variables)
            return tf.constant(True)

        return tf.cond(ok, apply, lambda: tf.constant(False))

    def progress(self) -> float:
        """The fraction of the search's weight steps done (restored with the optimizer)."""
        return int(self.weight_optimizer.iterations.numpy()) / self.total_weight_steps

    def arch_step(self, train_batches, val_batches) -> tuple[list[LossStats], bool]:
        """One architecture update; returns the validation stats and whether it applied."""
        result = self.method(self.steps, self.chain_inputs(train_batches, val_batches))
        # β-decay (off unless BetaDecaySettings.weight is bound), at the search's progress.
        regularizer = arch_regularizers.beta_decay_gradients(
            self.model.arch_tensors(), self.progress()
        )
        return result.val_stats, bool(self._apply_arch(result.grad, regularizer))

    # -- weight steps ------------------------------------------------------------

    def _set_anchor_fn(self):
        enc = [v.value for v in self.model.encoder.trainable_variables]
        self.anchor.assign(self.steps.encoder_layout.pack(enc))

    def _prepare_fn(self, g_enc, g_heads, enc, heads):
        """The direction of a real weight step (``objective.weight_step_direction``, clipped)."""
        chain = self.chain

        def replica_fn(g_enc, g_heads, enc, heads):
            d_enc, d_heads = objective.weight_step_direction(
                enc, heads, g_enc, g_heads, tf.identity(self.anchor), chain, clip=True
            )
            return d_enc, tuple(d_heads), _all_finite([d_enc, *d_heads])

        g_enc, g_heads, ok = self.strategy.run(replica_fn, args=(g_enc, g_heads, enc, heads))
        return g_enc, g_heads, self.strategy.experimental_local_results(ok)[0]

    def _apply_fn(self, index: int | None, grad, count: bool):
        """Applies one flat gradient to the encoder (``index`` None) or head ``index``."""
        steps, model = self.steps, self.model
        if index is None:
            layout, variables = steps.encoder_layout, model.encoder.trainable_variables
        else:
            layout, variables = steps.head_layouts[index], model.heads[index].trainable_variables
        grads = self.strategy.run(lambda g: layout.unpack(g), args=(grad,))
        apply_updates(self.strategy, self.weight_optimizer, grads, variables, count=count)

    def weight_step(self, learners: tuple[int, ...], batches) -> tuple[list[LossStats], bool]:
        """One real SGD step of the encoder and the stage's heads on their batches.

        The encoder's update is one compiled function shared by every stage, each
        head's another: tracing does not grow with the learners.
        """
        arch, enc, heads = self.steps.read()
        stage_heads = tuple(heads[k] for k in learners)
        _, g_enc, g_heads, stats = self.steps.gradient(learners, arch, enc, stage_heads, batches)
        if not all(bool(tf.math.is_finite(s.loss_sum)) for s in stats):
            return stats, False
        g_enc, g_heads, ok = self._prepare(g_enc, g_heads, enc, stage_heads)
        if not bool(ok):
            return stats, False
        # Heads first: the encoder's update counts the step (the learning rate
        # follows the optimizer's iterations).
        for k, g in zip(learners, g_heads, strict=True):
            self._apply_function(k)(g)
        self._apply_function(None)(g_enc)
        return stats, True

    def _apply_function(self, index: int | None):
        if index not in self._weight_steps:
            self._weight_steps[index] = tf.function(
                functools.partial(self._apply_fn, index, count=index is None),
                jit_compile=self._jit_compile,
                autograph=False,
            )
        return self._weight_steps[index]

    def start_stage(self) -> None:
        """Records the encoder as the current stage received it (W_anchor)."""
        self._set_anchor()

    # -- evaluation and checkpoints ------------------------------------------------

    def evaluate(self, learner: int, batches) -> RunningStats:
        """Learner ``learner``'s loss and accuracy over ``batches`` at the current weights."""
        arch, enc, heads = self.steps.read()
        total = RunningStats()
        for batch in batches:
            total.add(self.steps.evaluate(learner, arch, enc, heads[learner], batch))
        return total

    def checkpoint_objects(self, head_names: Sequence[str]) -> dict:
        """What a checkpoint of the search state holds of the engine, by name.

        Variables are listed explicitly: TF's checkpoint does not follow the layers
        Keras keeps in Python lists (cells, ops), so saving the layers themselves
        would silently drop most weights.
        """
        model = self.model
        return {
            "encoder": [v.value for v in model.encoder.weights],
            "heads": {
                name: [v.value for v in h.weights]
                for name, h in zip(head_names, model.heads, strict=True)
            },
            "arch": {
                name: v.value
                for name, v in zip(model.arch.names, model.arch.arch_variables, strict=True)
            },
            "weight_optimizer": self.weight_optimizer,
            "arch_optimizer": self.arch_optimizer,
        }

    # -- one iteration -----------------------------------------------------------

    def iteration(self, train_batches, val_batches, update_arch: bool = True) -> IterationResult:
        """Architecture step (unless ``update_arch`` is False), then the weight chain.

        ``train_batches[s][t]`` is a tuple with one (distributed) batch per learner
        of stage s; ``val_batches[k]`` learner k's validation batch. Returns
        per-learner statistics; raises :class:`NonFiniteLossError` (without applying
        the offending update) when a loss or gradient is not finite.
        """
        k = self.schedule.num_learners
        result = IterationResult(val=[None] * k, train=[[] for _ in range(k)])
        # DARTS-'s auxiliary skip weight for this iteration (no-op unless it is on).
        self.model.arch.set_progress(self.progress())
        if update_arch:
            stats, applied = self.arch_step(train_batches, val_batches)
            if not applied:
                raise NonFiniteLossError(
                    "the architecture hypergradient is NaN or inf "
                    f"(validation losses {[float(s.loss_sum) for s in stats]})",
                    phase="architecture",
                )
            result.val[:] = stats
        for s, stage in enumerate(self.schedule.stages):
            self.start_stage()
            for t in range(self.schedule.steps_per_stage):
                stats, applied = self.weight_step(stage.learners, train_batches[s][t])
                if not applied:
                    bad = [
                        k
                        for k, st in zip(stage.learners, stats, strict=True)
                        if not tf.math.is_finite(st.loss_sum)
                    ]
                    raise NonFiniteLossError(
                        f"non-finite training loss or gradient in stage {s}, step {t}, "
                        f"learners {bad or list(stage.learners)}",
                        phase="weights",
                        stage=s,
                        step=t,
                        learners=tuple(bad or stage.learners),
                    )
                for k_, st in zip(stage.learners, stats, strict=True):
                    result.train[k_].append(st)
        return result
