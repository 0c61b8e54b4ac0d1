"""A user's Keras builder as a search space, and the found network built from a genotype.

:class:`ChoiceSupernet` turns a builder with choice points (``il_tf/spaces/choices.py``)
into a supernet that the search uses like the built-in spaces
(``il_tf/spaces/space.py``): one logits tensor per choice point (shape ``(1, n)``, named
after the choice with ``.`` for ``/``), mixed with its softmax; :meth:`derive` keeps the
strongest candidate of each active choice. :func:`build_backbone` builds the same
builder with a genotype's choices fixed: only the kept candidates exist.

During the search the supernet is computed statelessly, one segment at a time, and its
second derivatives must be exact. Two kinds of Keras layers are therefore swapped in
the search's copy of the graph (never in the fixed network): ``BatchNormalization``
becomes :class:`SearchBatchNormalization` (the same γ and β, always batch statistics,
synchronized over replicas, no moving averages), and dropout and noise layers pass
their input through. Any other layer with non-trainable state is refused.

Segments (``il_tf/spaces/choice_graph.py``) follow the builder's top-level blocks: one
per top-level choice point, cut at the first tensor after it that every path from the
images to the features passes through; where there is none (a long skip, an
``InputChoice``), neighbouring choices share a segment, and a graph with no such
tensor at all is one segment. Fewer segments cost the segment-wise computations
(``chain_exact``, ``SearchConfig.segmented_gradients``) more memory, not correctness.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import gin
import keras
import numpy as np
import tensorflow as tf

from il_tf.spaces import choices as choices_lib
from il_tf.spaces.choice_genotype import ChoiceGenotype
from il_tf.spaces.choice_graph import SegmentCut, plan_cuts
from il_tf.spaces.choices import SEARCH, ChoiceError, ChoicePoint, MixChoice, arch_key
from il_tf.spaces.space import Segment, run_segments

__all__ = [
    "ChoiceSupernet",
    "SearchBatchNormalization",
    "build_backbone",
    "builder_identity",
    "choice_supernet",
]

#: Layers that draw random numbers; during the search they pass their input through.
NOISE_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)
# A probe build only finds the choice points: any spatial size, RGB.
PROBE_SHAPE = (None, None, 3)


# ------------------------------------------------------------------------- builders


def builder_identity(
    builder: Callable[..., Any], arguments: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any], Callable[..., Any]]:
    """(``module:qualified.name``, keyword arguments, the function) of a builder.

    The arguments are ``functools.partial`` keywords over the builder's gin bindings
    over ``arguments``: everything needed to call it again without gin. They must be
    JSON data (they go into the genotype).
    """
    keywords: dict[str, Any] = dict(arguments or {})
    fn = builder
    while isinstance(fn, functools.partial):
        if fn.args:
            raise ChoiceError(
                f"builder {fn!r} binds positional arguments; bind keyword arguments only"
            )
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    if not callable(fn):
        raise ChoiceError(
            f"a builder is a function builder(images, **arguments) -> features, got {fn!r}"
        )
    try:
        bindings = dict(gin.get_bindings(fn))
    except (ValueError, TypeError):  # not a gin configurable
        bindings = {}
    keywords = {**bindings, **keywords}
    try:
        keywords = json.loads(json.dumps(keywords))
    except (TypeError, ValueError) as err:
        raise ChoiceError(
            f"the arguments of builder {getattr(fn, '__name__', fn)!r} must be JSON data "
            f"(numbers, strings, lists, dicts), since the genotype records them: {err}"
        ) from None
    name = f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', type(fn).__name__)}"
    return name, keywords, fn


def import_builder(name: str) -> Callable[..., Any]:
    """The builder called ``module:qualified.name`` (as a genotype records it)."""
    module_name, _, qualname = name.partition(":")
    hint = "define the builder at module level in a module on the Python path"
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise ChoiceError(
            f"cannot import the genotype's builder {name!r} ({err}); {hint}"
        ) from None
    if not callable(obj):
        raise ChoiceError(f"the genotype's builder {name!r} is not a function; {hint}")
    return obj


@contextlib.contextmanager
def _dtypes(floatx: str, policy: Any) -> Iterator[None]:
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


@dataclasses.dataclass
class _Trace:
    """One run of a builder: its inputs, features and the choice points it made."""

    images: keras.KerasTensor
    features: keras.KerasTensor
    build: Any  # choices._Build

    @property
    def points(self) -> dict[str, ChoicePoint]:
        return self.build.points


def _trace(
    fn: Callable[..., Any],
    arguments: Mapping[str, Any],
    image_shape: Sequence[int | None],
    build: Any,
    name: str,
) -> _Trace:
    images = keras.Input(tuple(image_shape), name="images")
    with choices_lib.building(build):
        features = fn(images, **arguments)
    if not isinstance(features, keras.KerasTensor):
        raise ChoiceError(
            f"builder {name!r} returned a {type(features).__name__}; it must return the Keras "
            "tensor of the features, shape (batch, features)"
        )
    if len(features.shape) != 2 or features.shape[-1] is None:
        raise ChoiceError(
            f"builder {name!r} returned features of shape {tuple(features.shape)}; they must "
            "have shape (batch, features): end with e.g. GlobalAveragePooling2D()"
        )
    if not build.points:
        raise ChoiceError(
            f"builder {name!r} makes no choice: mark its decisions with "
            "il_tf.spaces.choices.Choice or InputChoice"
        )
    return _Trace(images, features, build)


# ------------------------------------------------------------------ search-time layers


def _moments(x: tf.Tensor, axes: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch mean and variance over ``axes``, over the global batch under a strategy.

    The variance keeps the gradient through the mean (no ``stop_gradient``), so second
    derivatives are exact.
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    if replicas > 1:
        shape = tf.shape(x)
        count = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), x.dtype)
        local = tf.concat(
            [tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), count[None]], 0
        )
        total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
        channels = tf.shape(x)[-1]
        n = total[-1]
        mean = total[:channels] / n
        return mean, total[channels : 2 * channels] / n - tf.square(mean)
    mean = tf.reduce_mean(x, axes)
    return mean, tf.reduce_mean(tf.square(x - mean), axes)


class SearchBatchNormalization(keras.layers.Layer):
    """A ``BatchNormalization`` as the search computes it: batch statistics, exact, synced.

    The same γ and β as the layer it stands for (same initializers; the found network's
    ``BatchNormalization`` has them too), no moving averages. Channels last.
    """

    def __init__(
        self,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    @classmethod
    def like(cls, layer: keras.layers.BatchNormalization) -> SearchBatchNormalization:
        """The search's form of ``layer`` (channels-last only)."""
        rank = layer.input_spec.ndim if layer.input_spec is not None else None
        if layer.axis != -1 and (rank is None or layer.axis != rank - 1):
            raise ChoiceError(
                f"layer {layer.name!r} normalizes axis {layer.axis}; the search supports "
                "channels-last BatchNormalization (axis=-1) only"
            )
        return cls(
            epsilon=layer.epsilon,
            center=layer.center,
            scale=layer.scale,
            beta_initializer=layer.beta_initializer,
            gamma_initializer=layer.gamma_initializer,
            name=layer.name,
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = (
            self.add_weight(shape=(channels,), initializer=self.gamma_initializer, name="gamma")
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(shape=(channels,), initializer=self.beta_initializer, name="beta")
            if self.center
            else None
        )
        self.built = True

    def call(self, x, training=None, mask=None):
        axes = list(range(len(x.shape) - 1))
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        channels = x.shape[-1]
        if len(axes) == 3 and replicas == 1 and x.dtype in (tf.float32, tf.bfloat16):
            # One fused op instead of ~10: a smaller graph; its gradient of gradient is exact.
            scale = tf.ones([channels]) if self.gamma is None else tf.cast(self.gamma, tf.float32)
            offset = tf.zeros([channels]) if self.beta is None else tf.cast(self.beta, tf.float32)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, epsilon=self.epsilon, is_training=True
            )
            return y
        mean, var = _moments(x, axes)
        y = (x - mean) * tf.math.rsqrt(var + tf.cast(self.epsilon, x.dtype))
        if self.gamma is not None:
            y = y * tf.cast(self.gamma, x.dtype)
        if self.beta is not None:
            y = y + tf.cast(self.beta, x.dtype)
        return y


class PassThrough(keras.layers.Layer):
    """A dropout or noise layer during the search: its input, unchanged."""

    def call(self, x, training=None, mask=None):
        return x


def _search_layer(layer: Any) -> Any:
    if isinstance(layer, keras.layers.BatchNormalization):
        return SearchBatchNormalization.like(layer)
    if isinstance(layer, NOISE_LAYERS):
        return PassThrough(name=layer.name)
    return layer


# --------------------------------------------------------------------------- supernet


@dataclasses.dataclass
class _Plan:
    """The search graph's segments (kept out of Keras's tracking: they share its layers)."""

    models: list[keras.Model]
    logits: list[list[str]]  # per segment, the choices whose logits it reads
    segments: list[Segment]


class ChoiceSupernet(keras.layers.Layer):
    """A builder with choice points, as a search space (``il_tf/spaces/space.py``).

    Args:
      builder: ``builder(images, **arguments) -> features`` (``il_tf/spaces/choices.py``);
        a gin configurable or a ``functools.partial`` too. It must be importable by
        its module and name for the found network to be trained and exported.
      arguments: keyword arguments of the builder (over its gin bindings).
      input_shape: (H, W, C) of the images. None: the choice points are found at
        once on images of any size, and the supernet is built when first called
        (for builders whose choices do not depend on the image size).

    ``call(images, arch)`` returns the features; ``arch`` maps each choice's
    :func:`~il_tf.spaces.choices.arch_key` to its logits, shape ``(1, candidates)``.
    """

    space = ChoiceGenotype.space
    genotype_type = ChoiceGenotype
    reads_aux_skip = False

    def __init__(
        self,
        builder: Callable[..., Any],
        arguments: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.builder_name, self.arguments, self._builder = builder_identity(builder, arguments)
        self._floatx, self._policy = keras.config.floatx(), keras.config.dtype_policy()
        probe = self._trace(PROBE_SHAPE if input_shape is None else tuple(input_shape))
        self._check_choices_used(probe)
        #: The choice points in the order the builder makes them (without the choice
        #: objects, which hold the probe's layers).
        self.points: dict[str, ChoicePoint] = {
            n: dataclasses.replace(p, owner=None) for n, p in probe.points.items()
        }
        self.feature_dim = int(probe.features.shape[-1])
        #: Per architecture tensor, its candidates (the columns of its logits).
        self.op_names = {arch_key(n): p.candidates for n, p in self.points.items()}
        self._plan: _Plan | None = None
        if input_shape is not None:
            self._build_search_graph(probe)
            self.built = True

    def _trace(self, shape: Sequence[int | None]) -> _Trace:
        with _dtypes(self._floatx, self._policy):
            return _trace(
                self._builder,
                self.arguments,
                shape,
                choices_lib._Build(SEARCH, dtype=keras.config.floatx()),
                self.builder_name,
            )

    def _check_choices_used(self, trace: _Trace) -> None:
        graph = keras.Model([trace.images, *trace.build.logits.values()], trace.features)
        used = {id(layer) for layer in graph.layers}
        for layer in trace.build.mixes:
            if id(layer) not in used:
                raise ChoiceError(
                    f"the output of choice {layer.choice!r} does not reach the features of "
                    f"builder {self.builder_name!r}; use it or remove the choice"
                )

    def build(self, input_shape=None):
        if self._plan is None:
            trace = self._trace(tuple(input_shape)[1:])
            found = [p.structure() for p in trace.points.values()]
            if found != [p.structure() for p in self.points.values()]:
                raise ChoiceError(
                    f"builder {self.builder_name!r} makes other choices on images of shape "
                    f"{tuple(input_shape)[1:]} than on images of any size; give the image "
                    "shape (gin: choice_supernet.input_shape = (H, W, C))"
                )
            self._build_search_graph(trace)
        self.built = True

    def _build_search_graph(self, trace: _Trace) -> None:
        names = list(trace.build.logits)
        source = keras.Model([trace.images, *trace.build.logits.values()], trace.features)
        with _dtypes(self._floatx, self._policy):
            graph = keras.models.clone_model(source, clone_function=_search_layer, recursive=True)
        stateful = sorted({v.path for v in graph.non_trainable_variables})
        if stateful:
            raise ChoiceError(
                f"builder {self.builder_name!r} has layers with non-trainable state "
                f"({', '.join(stateful[:4])}); the search computes the supernet statelessly: "
                "use BatchNormalization as a layer of the functional graph (the search "
                "replaces it) and no other stateful layers"
            )
        self.graph = graph  # tracked: its layers' weights are the supernet's
        images, *logits = graph.inputs
        logits_by_name = dict(zip(names, logits, strict=True))
        cuts = plan_cuts(images, graph.outputs[0], MixChoice)
        plan = self._plan_from_cuts(cuts, logits_by_name) if cuts else None
        if plan is None:  # no chain of cuts, or one the weights do not split along
            plan = self._plan_from_cuts(
                [SegmentCut(images, graph.outputs[0])], logits_by_name, check=False
            )
        self._plan = plan

    def _plan_from_cuts(self, cuts, logits_by_name, check: bool = True) -> _Plan | None:
        models, reads = [], []
        for cut in cuts:
            try:
                model = keras.Model([cut.start, *logits_by_name.values()], cut.end)
            except ValueError:
                return None
            mixed = {layer.choice for layer in model.layers if isinstance(layer, MixChoice)}
            names = [n for n in logits_by_name if n in mixed]
            models.append(keras.Model([cut.start, *(logits_by_name[n] for n in names)], cut.end))
            reads.append(names)
        owned = [v for m in models for v in m.trainable_variables]
        if check and sorted(id(v) for v in owned) != sorted(
            id(v) for v in self.graph.trainable_variables
        ):
            return None
        segments = [
            Segment(m.trainable_variables, functools.partial(self._apply, i))
            for i, m in enumerate(models)
        ]
        return _Plan(models, reads, segments)

    def _apply(self, index: int, state, arch, context):
        (x,) = state
        plan = self._plan
        logits = [arch[arch_key(n)] for n in plan.logits[index]]
        return (plan.models[index]([x, *logits]),)

    # -- the search space -------------------------------------------------------------

    def arch_shapes(self) -> dict[str, tuple[int, ...]]:
        """One logits tensor per choice point, shape ``(1, candidates)``."""
        return {arch_key(n): (1, len(p.candidates)) for n, p in self.points.items()}

    def call(self, images, arch: Mapping[str, tf.Tensor]):
        return run_segments(self, images, arch)

    def segments(self) -> list[Segment]:
        """One segment per top-level block, or fewer (see the module's text)."""
        return list(self._plan.segments)

    def segment_context(self, images):
        """None: nothing but the state flows between segments."""
        return None

    def derive(self, arch: Mapping[str, np.ndarray]) -> ChoiceGenotype:
        """The strongest candidate of each active choice (ties: the first listed).

        A choice inside a candidate is active when that candidate is kept at an
        active choice (or it is also used at the top level).
        """
        kept = {}
        for name, point in self.points.items():
            logits = np.asarray(arch[arch_key(name)], np.float64).reshape(-1)
            if logits.shape != (len(point.candidates),) or not np.all(np.isfinite(logits)):
                raise ChoiceError(
                    f"logits of choice {name!r} must be {len(point.candidates)} finite "
                    f"numbers, got {logits.tolist()}"
                )
            kept[name] = point.candidates[int(np.argmax(logits))]
        active: dict[str, str] = {}
        for name, point in self.points.items():  # parents are met before their children
            if any(p is None or active.get(p[0]) == p[1] for p in point.parents):
                active[name] = kept[name]
        return ChoiceGenotype(self.builder_name, self.arguments, active)

    def fixed_backbone(self, genotype: ChoiceGenotype, image_shape: Sequence[int]) -> keras.Model:
        """The found network of this builder (see :func:`build_backbone`)."""
        return build_backbone(
            genotype, image_shape, builder=self._builder, arguments=self.arguments
        )

    def get_config(self):
        return {
            **super().get_config(),
            "builder": self.builder_name,
            "arguments": self.arguments,
        }


@gin.configurable
def choice_supernet(
    builder: Callable[..., Any] = gin.REQUIRED,
    input_shape: Sequence[int] | None = None,
) -> keras.layers.Layer:
    """A Keras builder with choice points as the search's supernet (``ChoiceSupernet``).

    In gin: ``SearchConfig.supernet = @choice_supernet`` and
    ``choice_supernet.builder = @mobilenet_v2_backbone`` (its own settings bound as
    ``mobilenet_v2_backbone.width = 16``). ``input_shape`` (H, W, C) is needed only
    when the builder's choices depend on the image size.
    """
    return ChoiceSupernet(builder, input_shape=None if input_shape is None else tuple(input_shape))


# ----------------------------------------------------------------------- fixed network


def build_backbone(
    genotype: ChoiceGenotype,
    image_shape: Sequence[int],
    builder: Callable[..., Any] | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> keras.Model:
    """The found network's backbone: ``images -> features`` with only the kept candidates.

    The builder is the genotype's (imported by its name) unless ``builder`` is given,
    which must then be the one the genotype was found with, with the same arguments.
    """
    if not isinstance(genotype, ChoiceGenotype):
        raise ChoiceError(
            f"a choices network needs a ChoiceGenotype, got a "
            f"{getattr(genotype, 'space', type(genotype).__name__)!r} genotype"
        )
    if builder is None:
        fn, name, args = import_builder(genotype.builder), genotype.builder, genotype.arguments
    else:
        name, args, fn = builder_identity(builder, arguments)
        if (name, args) != (genotype.builder, dict(genotype.arguments)):
            raise ChoiceError(
                f"the genotype was found with builder {genotype.builder!r} and arguments "
                f"{json.dumps(genotype.arguments)}, not {name!r} with {json.dumps(args)}"
            )
    shape = tuple(int(d) for d in image_shape)
    trace = _trace(fn, args, shape, choices_lib._Build(choices_lib.FIXED, genotype.choices), name)
    unknown = [n for n in genotype.choices if n not in trace.points]
    if unknown:
        raise ChoiceError(
            f"the genotype names choice {unknown[0]!r}, which builder {name!r} does not make "
            f"here (its choices: {', '.join(trace.points)})"
        )
    return keras.Model(trace.images, trace.features, name="backbone")
