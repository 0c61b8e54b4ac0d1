"""The settings of a search: ``SearchConfig`` (gin) and the record of them in ``run.json``.

A restarted search is compared with its workdir's record (``il_tf.rundir``): every
setting must match but the :data:`FREE_SETTINGS`, and the :data:`EXTENDABLE_SETTINGS`
may grow when asked to.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import gin
import keras

from il_tf import rundir
from il_tf.data.learners import Learner, check_unique_names
from il_tf.learning.arch_regularizers import BetaDecaySettings
from il_tf.learning.engine import OptimizerSettings
from il_tf.learning.hypergradients import get_method
from il_tf.learning.stage_schedule import SCHEDULES, Schedule, make_schedule
from il_tf.settings_checks import check_bool, check_int, check_number, invalid
from il_tf.spaces.architecture import AuxSkipSettings
from il_tf.spaces.factories import darts_supernet

OWNER = "SearchConfig"
# Settings a restarted search may change: they do not change what it computes.
FREE_SETTINGS = (
    "checkpoint_every",
    "keep_checkpoints",
    "draw",
    "nb201_table",
    "jit_compile",
    # The memory and compile plan (il_tf/learning/plan.py): the same values (to
    # rounding), computed another way.
    "graph_optimizer",
    "constant_folding",
    "segmented_gradients",
    "supernet.arguments.wide_edges",
    "plan",
)
# Settings a restarted search may raise when asked to (``extend``, tools/search.py --extend).
EXTENDABLE_SETTINGS = ("epochs",)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search; bound in gin files (``SearchConfig.rounds = 2``).

    Attributes:
      learners: the learners (K ≥ 1); each has its own data and head.
      supernet: a factory of the searchable encoder (``@darts_supernet``, ...).
      method: the hypergradient method, a name in ``il_tf.learning.hypergradients.METHODS``
        (what each computes and costs): ``chain_finite_difference`` (the default:
        through the whole chain, finite-difference Hessian-vector products),
        ``chain_exact``, ``unrolled``, ``per_learner_finite_difference`` or
        ``first_order``.
      schedule: ``interleaved`` (the method), ``blocked`` or ``joint`` (ablations).
      rounds: R, how often each learner trains the encoder per iteration.
      steps_per_stage: T, one-step updates per stage.
      proximity: λ of λ‖W − W_prev‖², coupling each stage to the encoder it received.
      order: learner names in stage order (default: as listed).
      epochs: search epochs.
      iterations_per_epoch: iterations per epoch (default: enough for every learner
        to see its train split once).
      arch_warmup_epochs: epochs of weight steps only before α starts to move.
      optimizers: learning rates, momentum, weight decay, clipping.
      seed: the run's seed (initialization, shuffling, augmentation).
      checkpoint_every: iterations between checkpoints (and at every epoch end).
      keep_checkpoints: how many checkpoints to keep.
      eval_batches: validation batches per learner evaluated after each epoch
        (None: the whole validation split).
      draw: draw the cells after every epoch (needs graphviz's ``dot``).
      nb201_table: a NAS-Bench-201 table path; when set, the found cell's
        accuracies are looked up and reported (NAS-Bench-201 space only).
      jit_compile: compile the steps with XLA.
      graph_optimizer: run TensorFlow's graph optimizer (grappler) on the step
        functions. False turns it off while the search runs: long unrolled chains
        then start far sooner, at the cost of more memory. None (default): the
        search's plan chooses (``il_tf/learning/plan.py``), as for the next two.
      constant_folding: let the graph optimizer fold constants. False keeps it from
        storing activation-sized constant tensors in the compiled second-order
        functions of the exact chain, which lowers its peak memory.
      segmented_gradients: compute every gradient one supernet segment (a DARTS
        cell) at a time, recomputing its activations: the memory of one segment's
        activations instead of the whole network's, for one more forward pass per
        gradient.
      mixed_precision: None (float32) or ``mixed_bfloat16``: the supernet and heads
        compute in bfloat16 with float32 weights; losses, α and every hypergradient
        stay float32. (float16 would need loss scaling inside the unrolled chain.)
    """

    learners: Sequence[Learner] | None = None
    supernet: Callable[[], keras.layers.Layer] = darts_supernet
    method: str = "chain_finite_difference"
    schedule: str = "interleaved"
    rounds: int = 1
    steps_per_stage: int = 1
    proximity: float = 1e-3
    order: Sequence[str] | None = None
    epochs: int = 50
    iterations_per_epoch: int | None = None
    arch_warmup_epochs: int = 0
    optimizers: OptimizerSettings | None = None
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    eval_batches: int | None = None
    draw: bool = True
    nb201_table: str | None = None
    jit_compile: bool = False
    graph_optimizer: bool | None = None
    constant_folding: bool | None = None
    segmented_gradients: bool | None = None
    mixed_precision: str | None = None

    def __post_init__(self):
        if self.optimizers is None:
            # Built here, not at import, so that gin bindings of OptimizerSettings apply.
            object.__setattr__(self, "optimizers", OptimizerSettings())
        if self.learners is None:
            object.__setattr__(self, "learners", (Learner("digits"),))
        learners = tuple(self.learners)
        if not learners:
            raise ValueError("SearchConfig.learners is empty; give at least one Learner")
        for item in learners:
            if not isinstance(item, Learner):
                raise ValueError(
                    f"SearchConfig.learners entries must be Learner(...), got {item!r} "
                    "(in gin: SearchConfig.learners = [@name/Learner()])"
                )
        check_unique_names(learners)
        object.__setattr__(self, "learners", learners)
        get_method(self.method)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {list(SCHEDULES)}")
        for name in ("rounds", "steps_per_stage", "epochs", "checkpoint_every", "keep_checkpoints"):
            check_int(OWNER, name, getattr(self, name), minimum=1)
        check_number(OWNER, "proximity", self.proximity, minimum=0)
        check_int(OWNER, "iterations_per_epoch", self.iterations_per_epoch, 1, optional=True)
        check_int(OWNER, "arch_warmup_epochs", self.arch_warmup_epochs, minimum=0)
        if self.arch_warmup_epochs > self.epochs:
            raise invalid(
                OWNER, "arch_warmup_epochs", f"<= epochs ({self.epochs})", self.arch_warmup_epochs
            )
        check_int(OWNER, "eval_batches", self.eval_batches, minimum=1, optional=True)
        check_int(OWNER, "seed", self.seed, minimum=0)
        if self.order is not None:
            names = [lr.name for lr in learners]
            if sorted(self.order) != sorted(names):
                raise ValueError(
                    f"SearchConfig.order {list(self.order)} must list each learner name once: {names}"
                )
        for name in ("jit_compile", "draw"):
            check_bool(OWNER, name, getattr(self, name))
        for name in ("graph_optimizer", "constant_folding", "segmented_gradients"):
            check_bool(OWNER, name, getattr(self, name), True, " (None: the search's plan)")
        if self.mixed_precision not in (None, "mixed_bfloat16"):
            raise invalid(
                OWNER,
                "mixed_precision",
                "None or 'mixed_bfloat16' (float16 needs loss scaling, which the "
                "hypergradient chain does not do)",
                self.mixed_precision,
            )
        if self.nb201_table is not None and not Path(self.nb201_table).is_file():
            raise ValueError(
                f"SearchConfig.nb201_table {self.nb201_table!r} is not a file "
                "(the gzip JSON NAS-Bench-201 table; see il_tf/nb201_lookup.py)"
            )

    def make_schedule(self) -> Schedule:
        names = [lr.name for lr in self.learners]
        order = None if self.order is None else [names.index(n) for n in self.order]
        return make_schedule(
            len(self.learners), self.rounds, self.schedule, self.steps_per_stage, order
        )

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run that wrote the workdir."""
        return {
            "learners": [
                {
                    "name": lr.name,
                    "source": getattr(lr.source, "description", repr(lr.source)),
                    "classes": None if lr.classes is None else list(lr.classes),
                    "image_size": lr.image_size,
                    "batch_size": lr.batch_size,
                    "val_fraction": lr.val_fraction,
                }
                for lr in self.learners
            ],
            "method": self.method,
            "schedule": self.schedule,
            "rounds": self.rounds,
            "steps_per_stage": self.steps_per_stage,
            "order": None if self.order is None else list(self.order),
            "seed": self.seed,
            "mixed_precision": self.mixed_precision,
        }

    def settings(self) -> dict:
        """Every setting as JSON values: what ``run.json`` records and a restart must match.

        The learners (their sources by description), the supernet factory with its
        arguments and gin bindings, the optimizers, the gin-bound β-decay settings, the
        auxiliary skip settings (when on) and every other field.
        """
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["learners"] = [_learner_settings(lr) for lr in self.learners]
        record["supernet"] = factory_settings(self.supernet)
        record["optimizers"] = dataclasses.asdict(self.optimizers)
        record["beta_decay"] = dataclasses.asdict(BetaDecaySettings())
        aux_skip = AuxSkipSettings()
        if aux_skip.enabled:  # only when on: runs recorded before it existed still match
            record["aux_skip"] = dataclasses.asdict(aux_skip)
        return rundir.jsonable(record)


def _plain(value):
    """``value`` if it is plain JSON data, else a stable name for it (no memory addresses)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **_plain(dataclasses.asdict(value))}
    return getattr(value, "__name__", type(value).__name__)


def _learner_settings(learner: Learner) -> dict:
    record = {f.name: getattr(learner, f.name) for f in dataclasses.fields(learner)}
    record["source"] = getattr(learner.source, "description", type(learner.source).__name__)
    return _plain(record)


def factory_settings(factory) -> dict:
    """A supernet factory's name and arguments: ``functools.partial`` keywords over its
    gin bindings."""
    keywords: dict = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    try:
        bindings = dict(gin.get_bindings(factory))
    except (ValueError, TypeError):  # not a gin configurable
        bindings = {}
    return {
        "factory": getattr(factory, "__name__", type(factory).__name__),
        "arguments": _plain({**bindings, **keywords}),
    }


def run_settings(
    config: SearchConfig, encoder, iterations_per_epoch: int, datas, plan: dict
) -> dict:
    """A run's settings for ``run.json``: the config's, the supernet's shapes, the data
    sizes and the memory and compile plan.

    ``encoder`` is the built supernet, ``datas`` the learners' ``LearnerData``, ``plan``
    the plan's record (``Plan.record()``).
    """
    settings = config.settings()
    settings["plan"] = dict(plan)
    settings["supernet"].update(
        weights=[list(v.shape) for v in encoder.weights],
        arch={k: list(v) for k, v in encoder.arch_shapes().items()},
    )
    settings["data"] = {
        "iterations_per_epoch": iterations_per_epoch,
        "learners": {
            d.name: {"num_train": d.num_train, "num_val": d.num_val, "classes": d.num_classes}
            for d in datas
        },
    }
    return rundir.jsonable(settings)
