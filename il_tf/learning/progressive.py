"""Progressive search (P-DARTS): stages of growing depth over shrinking per-edge op sets.

Each stage is an ordinary (interleaved) search, ``run_search``, in its own
workdir ``WORKDIR/stage_<i>/`` (1-based), on a DARTS supernet whose depth, op
sets, skip-connect dropout and warm-up are the stage's. Between stages every
edge keeps the ``num_ops[i + 1]`` ops with the largest softmax(α) of the stage
before (``none`` ranks like any other op, as in P-DARTS; ties drop the earlier
op). Weights, α and optimizers start afresh in each stage, as in the P-DARTS
code; stage i (0-based) runs with seed ``SearchConfig.seed + i``. The skip-connect
dropout rate is constant within a stage (the P-DARTS code also decays it epoch by
epoch). The last stage's α gives the final genotype by the DARTS rule (``none``
never kept) with at most ``max_skip_normal`` skip-connects in the normal cell;
it goes to ``WORKDIR/genotype.json``.

Resuming is by construction: a stage whose ``genotype.json`` says it ran all its
epochs is skipped (its α is read from that file, so an interrupted and an
uninterrupted run prune from the same numbers), the current stage resumes from
its own checkpoints, later stages have not started. ``WORKDIR`` is a run directory
(``il_tf.rundir``, kind ``progressive_search``: lock, ``run.json`` with the settings of
the whole search, ``config.gin``); each stage directory is a search's run directory,
plus ``stage.json`` (its depth and op sets, written when the stage has run). A workdir
written with other settings is refused; ``extend`` lets a restart give the LAST stage
more epochs (earlier stages were pruned from what the stage before found).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Callable, Sequence
from pathlib import Path

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from il_tf import distribute, rundir
from il_tf.learning.search import SearchError, run_search
from il_tf.learning.search_config import FREE_SETTINGS, SearchConfig
from il_tf.spaces import genotypes as genotypes_lib
from il_tf.spaces.darts_supernet import derive_darts_genotype
from il_tf.spaces.drawing import DrawingUnavailable, draw_genotype
from il_tf.spaces.genotypes import DARTS_OPS
from il_tf.spaces.space import check_space

EdgeOps = tuple[tuple[str, ...], ...]
KIND = "progressive_search"
STAGE_FILE = "stage.json"


class ProgressiveError(SearchError):
    """A progressive search cannot run or resume (bad settings, foreign workdir)."""


def _per_stage(name: str, value, stages: int, kind=int) -> tuple:
    """One value per stage, from a per-stage list or one value for all stages."""
    values = tuple(value) if isinstance(value, Sequence) else (value,) * stages
    if len(values) != stages:
        raise ValueError(
            f"ProgressiveConfig.{name} needs one value per stage ({stages}), got {list(values)}"
        )
    allowed = (int,) if kind is int else (int, float)
    if not all(isinstance(v, allowed) and not isinstance(v, bool) for v in values):
        what = "integers" if kind is int else "numbers"
        raise ValueError(f"ProgressiveConfig.{name} must hold {what}, got {list(values)}")
    return tuple(kind(v) for v in values)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ProgressiveConfig:
    """The stages of a progressive (P-DARTS) search; bound in gin files.

    Binding any ``ProgressiveConfig`` parameter makes ``tools/search.py`` run a
    progressive search; the ``SearchConfig`` supplies everything else (learners,
    schedule, hypergradient method, optimizers, seed, the supernet factory and
    its other settings, e.g. ``darts_supernet.channels`` or ``partial_channels``).

    Attributes:
      depths: cells of the supernet in each stage (P-DARTS: 5, 11, 17).
      num_ops: ops per edge in each stage (P-DARTS: 8, 5, 3); ``num_ops[0]`` is
        ``len(ops)``, later stages keep the strongest ops of the stage before.
      ops: the first stage's op set (shared by all edges).
      skip_dropout: the skip-connect dropout rate of each stage (P-DARTS on
        CIFAR-10: 0.0, 0.4, 0.7), constant within a stage.
      epochs: epochs of each stage (one number for all, or one per stage).
      arch_warmup_epochs: weight-only epochs at the start of each stage.
      batch_sizes: per-stage batch size of every learner (None: the learners' own).
      max_skip_normal: the cap on skip-connects in the final normal cell (None: no cap).
    """

    depths: Sequence[int] = (5, 11, 17)
    num_ops: Sequence[int] = (8, 5, 3)
    ops: Sequence[str] = DARTS_OPS
    skip_dropout: Sequence[float] = (0.0, 0.4, 0.7)
    epochs: int | Sequence[int] = 25
    arch_warmup_epochs: int | Sequence[int] = 10
    batch_sizes: Sequence[int] | None = None
    max_skip_normal: int | None = 2

    def __post_init__(self):
        depths = tuple(self.depths)
        stages = len(depths)
        if stages < 1:
            raise ValueError("ProgressiveConfig.depths is empty; give one depth per stage")
        set_ = functools.partial(object.__setattr__, self)
        set_("depths", _per_stage("depths", depths, stages))
        set_("num_ops", _per_stage("num_ops", self.num_ops, stages))
        set_("skip_dropout", _per_stage("skip_dropout", self.skip_dropout, stages, float))
        set_("epochs", _per_stage("epochs", self.epochs, stages))
        set_(
            "arch_warmup_epochs", _per_stage("arch_warmup_epochs", self.arch_warmup_epochs, stages)
        )
        if self.batch_sizes is not None:
            set_("batch_sizes", _per_stage("batch_sizes", self.batch_sizes, stages))
        if isinstance(self.ops, str) or not all(isinstance(o, str) for o in self.ops):
            raise ValueError(f"ProgressiveConfig.ops must be a list of op names, got {self.ops!r}")
        set_("ops", tuple(self.ops))
        unknown = [op for op in self.ops if op not in DARTS_OPS]
        if unknown or len(set(self.ops)) != len(self.ops):
            raise ValueError(
                f"ProgressiveConfig.ops {list(self.ops)} must list distinct DARTS ops "
                f"({', '.join(DARTS_OPS)})"
            )
        if any(d < 1 for d in self.depths):
            raise ValueError(f"ProgressiveConfig.depths must be >= 1, got {list(self.depths)}")
        if self.num_ops[0] != len(self.ops):
            raise ValueError(
                f"ProgressiveConfig.num_ops[0] ({self.num_ops[0]}) must equal the number of "
                f"ops of the first stage, len(ops) = {len(self.ops)}"
            )
        for a, b in zip(self.num_ops, self.num_ops[1:], strict=False):
            if not 1 <= b <= a:
                raise ValueError(
                    "ProgressiveConfig.num_ops must not grow and stay >= 1, got "
                    f"{list(self.num_ops)}"
                )
        for rate in self.skip_dropout:
            if not 0.0 <= rate < 1.0:
                raise ValueError(
                    f"ProgressiveConfig.skip_dropout rates must be in [0, 1), got {rate}"
                )
        for e, w in zip(self.epochs, self.arch_warmup_epochs, strict=True):
            if e < 1 or not 0 <= w <= e:
                raise ValueError(
                    "ProgressiveConfig: each stage needs epochs >= 1 and 0 <= arch_warmup_epochs "
                    f"<= epochs, got epochs {list(self.epochs)}, arch_warmup_epochs "
                    f"{list(self.arch_warmup_epochs)}"
                )
        if self.batch_sizes is not None and any(b < 1 for b in self.batch_sizes):
            raise ValueError(
                f"ProgressiveConfig.batch_sizes must be >= 1, got {list(self.batch_sizes)}"
            )
        if self.max_skip_normal is not None and (
            not isinstance(self.max_skip_normal, int) or self.max_skip_normal < 0
        ):
            raise ValueError(
                "ProgressiveConfig.max_skip_normal must be None or an integer >= 0, got "
                f"{self.max_skip_normal!r}"
            )

    @property
    def num_stages(self) -> int:
        return len(self.depths)


def is_configured() -> bool:
    """Whether the parsed gin config binds a ``ProgressiveConfig`` parameter."""
    return bool(gin.get_bindings(ProgressiveConfig))


def prune_ops(alpha, edge_ops: EdgeOps, keep: int) -> EdgeOps:
    """Per edge, the ``keep`` ops with the largest softmax(α), in their original order.

    P-DARTS's rule: the weakest ops are dropped one by one (ties: the earlier op
    goes first); ``none`` competes like any other op, except when a single op is
    kept, where ``none`` goes first (P-DARTS's last pruning).
    """
    probs = genotypes_lib.softmax_alphas(np.asarray(alpha, dtype=np.float64))
    if probs.shape != (len(edge_ops), len(edge_ops[0])):
        raise ProgressiveError(
            f"α of shape {probs.shape} does not match {len(edge_ops)} edges × "
            f"{len(edge_ops[0])} ops"
        )
    pruned = []
    for p, ops in zip(probs, edge_ops, strict=True):
        order = sorted(range(len(ops)), key=lambda k: (p[k], k))  # weakest first
        if keep == 1 and "none" in ops:
            order.remove(ops.index("none"))
            order.insert(0, ops.index("none"))
        dropped = set(order[: len(ops) - keep])
        pruned.append(tuple(op for k, op in enumerate(ops) if k not in dropped))
    return tuple(pruned)


@dataclasses.dataclass(frozen=True)
class ProgressiveResult:
    """What a progressive search leaves (``genotype_path`` None when it stopped early)."""

    genotype: object
    workdir: Path
    genotype_path: Path | None
    stages: list[dict]
    metrics: dict


def _stage_dir(workdir: Path, i: int) -> Path:
    return workdir / f"stage_{i + 1}"


def _iterations_done(stage_dir: Path) -> int:
    latest = tf.train.latest_checkpoint(str(stage_dir / "checkpoints"))
    return int(latest.rsplit("-", 1)[-1]) if latest else 0


def _finished_metadata(stage_dir: Path, epochs: int) -> dict | None:
    """The stage's genotype.json metadata if the stage ran all its epochs, else None."""
    path = stage_dir / "genotype.json"
    if not path.is_file():
        return None
    _, meta = genotypes_lib.load_genotype_with_metadata(path)
    return meta if meta.get("epoch", 0) >= epochs else None


def _stage_record(
    progressive: ProgressiveConfig, i: int, normal: EdgeOps | None, reduce: EdgeOps | None
) -> dict:
    """What ``stage.json`` holds; op sets are per edge, or one flat list shared by all edges."""

    def ops(edge_ops):
        return list(progressive.ops) if edge_ops is None else [list(o) for o in edge_ops]

    return {
        "stage": i + 1,
        "depth": progressive.depths[i],
        "num_ops": progressive.num_ops[i],
        "skip_dropout": progressive.skip_dropout[i],
        "epochs": progressive.epochs[i],
        "arch_warmup_epochs": progressive.arch_warmup_epochs[i],
        "batch_size": None if progressive.batch_sizes is None else progressive.batch_sizes[i],
        "ops_normal": ops(normal),
        "ops_reduce": ops(reduce),
    }


def _check_stage_record(stage_dir: Path, record: dict, extend: bool = False) -> None:
    """Refuses a stage directory whose ``stage.json`` holds other settings (reads only).

    With ``extend``, the stage's epochs may grow.
    """
    path = stage_dir / STAGE_FILE
    if path.is_file():
        previous = rundir.read_json(path, "stage record")
        changed = sorted(k for k in record if previous.get(k) != record[k])
        if extend and changed == ["epochs"] and record["epochs"] > previous["epochs"]:
            return
        if changed:
            raise ProgressiveError(
                f"{stage_dir} holds a stage with other settings ({', '.join(changed)} differ); "
                "resume it with its own config or use a new --workdir"
            )


def progressive_settings(config: SearchConfig, progressive: ProgressiveConfig) -> dict:
    """Every setting of a progressive search, as its ``run.json`` records them."""
    search = config.settings()
    # Set per stage.
    for name in ("epochs", "arch_warmup_epochs"):
        search.pop(name)
    stages = {
        f"stage_{i + 1}": {
            key: value
            for key, value in _stage_record(progressive, i, None, None).items()
            if key not in ("stage", "ops_normal", "ops_reduce")
        }
        for i in range(progressive.num_stages)
    }
    return rundir.jsonable(
        {
            "search": search,
            "ops": list(progressive.ops),
            "max_skip_normal": progressive.max_skip_normal,
            "stages": stages,
        }
    )


def stage_config(
    config: SearchConfig,
    progressive: ProgressiveConfig,
    i: int,
    normal: EdgeOps | None,
    reduce: EdgeOps | None,
) -> SearchConfig:
    """The ``SearchConfig`` of stage ``i`` (0-based); ``normal``/``reduce`` None = ``ops``."""
    last = i == progressive.num_stages - 1
    supernet = functools.partial(
        config.supernet,
        num_cells=progressive.depths[i],
        ops=progressive.ops if normal is None else normal,
        reduce_ops=None if reduce is None else reduce,
        skip_dropout=progressive.skip_dropout[i],
        max_skip_normal=progressive.max_skip_normal if last else None,
    )
    learners = config.learners
    if progressive.batch_sizes is not None:
        learners = tuple(
            dataclasses.replace(lr, batch_size=progressive.batch_sizes[i]) for lr in learners
        )
    return dataclasses.replace(
        config,
        supernet=supernet,
        learners=learners,
        epochs=progressive.epochs[i],
        arch_warmup_epochs=progressive.arch_warmup_epochs[i],
        seed=config.seed + i,
    )


def run_progressive(
    config: SearchConfig,
    progressive: ProgressiveConfig,
    workdir: str | Path,
    strategy: tf.distribute.Strategy | None = None,
    stop_after: int | None = None,
    extend: bool = False,
    config_text: str | None = None,
) -> ProgressiveResult:
    """Runs (or resumes) a progressive search in ``workdir``; see the module docstring.

    ``stop_after``: stop, with a checkpoint, once this many iterations (over all
    stages) have run in this call; calling again on ``workdir`` resumes. ``extend``:
    a restart may give the last stage more epochs. ``config_text`` (the gin config) goes
    to ``WORKDIR/config.gin``.
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1 or None, got {stop_after}")
    _check_factory(config, progressive)
    strategy = strategy or distribute.make_strategy()
    last = progressive.num_stages
    with rundir.RunDir(workdir, KIND) as run:
        run.check(
            progressive_settings(config, progressive),
            free=[f"search.{name}" for name in FREE_SETTINGS],
            extendable=[f"stages.stage_{last}.epochs"],
            extend=extend,
        )

        def begin() -> None:
            # Recorded when a stage is about to do its first step (or all are done).
            if not run.begun:
                run.begin(config_text)

        return _run_stages(config, progressive, run, strategy, stop_after, extend, begin)


def _run_stages(
    config: SearchConfig,
    progressive: ProgressiveConfig,
    run: rundir.RunDir,
    strategy: tf.distribute.Strategy,
    stop_after: int | None,
    extend: bool,
    begin: Callable[[], None],
) -> ProgressiveResult:
    workdir, chief = run.path, run.chief
    remaining = stop_after
    normal: EdgeOps | None = None  # None: the first stage's shared op list
    reduce: EdgeOps | None = None
    stages: list[dict] = []
    meta: dict = {}
    for i in range(progressive.num_stages):
        stage_dir = _stage_dir(workdir, i)
        record = _stage_record(progressive, i, normal, reduce)
        extend_stage = extend and i == progressive.num_stages - 1
        _check_stage_record(stage_dir, record, extend_stage)
        stages.append({**record, "workdir": str(stage_dir)})
        finished = _finished_metadata(stage_dir, progressive.epochs[i])
        if finished is None:
            if remaining is not None and remaining <= 0:
                return _stopped(workdir, stages, i, meta)
            cfg = stage_config(config, progressive, i, normal, reduce)
            print(
                f"progressive search: stage {i + 1}/{progressive.num_stages}, "
                f"{progressive.depths[i]} cells, {progressive.num_ops[i]} ops per edge, "
                f"skip dropout {progressive.skip_dropout[i]}",
                flush=True,
            )
            logging.info("progressive search: stage %d in %s", i + 1, stage_dir)
            before = _iterations_done(stage_dir)
            result = run_search(
                cfg,
                stage_dir,
                strategy,
                stop_after=remaining,
                extend=extend_stage,
                on_begin=begin,
            )
            if chief:  # the stage has run: its record (new, or with more epochs)
                rundir.write_json(stage_dir / STAGE_FILE, record)
            if remaining is not None:
                remaining -= _iterations_done(stage_dir) - before
            gc.collect()
            if result.genotype_path is None:
                return _stopped(workdir, stages, i, result.metrics)
            finished = _finished_metadata(stage_dir, progressive.epochs[i])
            if finished is None:
                raise ProgressiveError(f"stage {i + 1} in {stage_dir} ended without its genotype")
        meta = finished
        alpha = meta["alpha"]
        cur_normal = normal or _broadcast(progressive.ops, len(alpha["normal"]))
        cur_reduce = reduce or _broadcast(progressive.ops, len(alpha["reduce"]))
        if i + 1 < progressive.num_stages:
            keep = progressive.num_ops[i + 1]
            normal = prune_ops(alpha["normal"], cur_normal, keep)
            reduce = prune_ops(alpha["reduce"], cur_reduce, keep)
        else:
            normal, reduce = cur_normal, cur_reduce
    begin()
    arch = {k: np.asarray(v, dtype=np.float64) for k, v in meta["alpha"].items()}
    last_genotype, _ = genotypes_lib.load_genotype_with_metadata(
        _stage_dir(workdir, progressive.num_stages - 1) / "genotype.json"
    )
    genotype = derive_darts_genotype(
        arch,
        normal,
        reduce,
        steps=_steps_of(len(arch["normal"])),
        multiplier=len(last_genotype.normal_concat),
        max_skip_normal=progressive.max_skip_normal,
    )
    path = workdir / "genotype.json"
    if chief:
        metadata = {
            "search": "progressive",
            "method": meta.get("method"),
            "schedule": meta.get("schedule"),
            "learners": meta.get("learners"),
            "seed": config.seed,
            "max_skip_normal": progressive.max_skip_normal,
            "stages": stages,
            "ops_normal": [list(o) for o in normal],
            "ops_reduce": [list(o) for o in reduce],
            "alpha": meta["alpha"],
            "metrics": meta.get("metrics", {}),
        }
        genotypes_lib.save_genotype(path, genotype, metadata)
        if config.draw:
            try:
                with rundir.io_errors(workdir, "write to"):
                    draw_genotype(genotype, workdir, basename="genotype")
            except DrawingUnavailable as e:
                logging.warning("%s", e)
                print(f"warning: {e}", flush=True)
    print(f"progressive search finished; genotype: {path}", flush=True)
    return ProgressiveResult(genotype, workdir, path, stages, meta.get("metrics", {}))


_STAGE_SETTINGS = ("num_cells", "ops", "reduce_ops", "skip_dropout", "max_skip_normal")


def _check_factory(config: SearchConfig, progressive: ProgressiveConfig) -> None:
    """Fails early unless the supernet factory builds a DARTS-space stage supernet."""
    factory = config.supernet
    name = getattr(factory, "__name__", repr(factory))
    fix = "a progressive search needs SearchConfig.supernet = @darts_supernet"
    try:
        # Built without weights (cheap): the first stage's supernet.
        probe = stage_config(config, progressive, 0, None, None).supernet()
    except TypeError as e:
        raise ProgressiveError(
            f"the supernet factory {name!r} does not take the per-stage settings "
            f"({', '.join(_STAGE_SETTINGS)}): {e}; {fix}"
        ) from None
    space = check_space(probe, "SearchConfig.supernet")
    if not issubclass(space.genotype_type, genotypes_lib.Genotype):
        raise ProgressiveError(
            f"the supernet factory {name!r} searches the {space.space!r} space, whose cells "
            f"cannot be pruned stage by stage; {fix}"
        )


def _broadcast(ops: Sequence[str], edges: int) -> EdgeOps:
    return (tuple(ops),) * edges


def _steps_of(edges: int) -> int:
    """The node count of a cell with ``edges`` mixed edges (inverse of ``num_edges``)."""
    steps = 1
    while genotypes_lib.num_edges(steps) < edges:
        steps += 1
    if genotypes_lib.num_edges(steps) != edges:
        raise ProgressiveError(f"α with {edges} rows is not a DARTS cell's edge count")
    return steps


def _stopped(workdir: Path, stages: list[dict], i: int, metrics: dict) -> ProgressiveResult:
    print(
        f"progressive search stopped in stage {i + 1}; run again on {workdir} to resume",
        flush=True,
    )
    return ProgressiveResult(None, workdir, None, stages, metrics)
