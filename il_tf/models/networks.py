"""Networks built from a DARTS genotype, trained from scratch (the evaluation networks).

The architecture is that of the reference DARTS code (``model.py``: ``NetworkCIFAR``,
``NetworkImageNet``, ``Cell``, the auxiliary heads and ``drop_path``), in NHWC:

- CIFAR: stem conv3×3 (3·C channels) + BN; N cells, reduction cells (stride 2,
  channels doubled) at N//3 and 2N//3; global average pooling; a linear classifier.
- ImageNet: stem0 = conv3×3 s2 (C/2), BN, ReLU, conv3×3 s2 (C), BN; stem1 = ReLU,
  conv3×3 s2 (C), BN; the first cell's ``s0`` comes from stem0 at twice the
  resolution of stem1, so it is reduced (``reduction_prev`` starts True).
- A cell preprocesses its two inputs (FactorizedReduce when the previous cell
  reduced, else ReLU-conv1×1-BN), each node sums its two genotype ops, and the
  output concatenates the ``concat`` nodes.
- Auxiliary head (training only) on the output of cell 2N//3.
- Drop-path on every op that is not an identity, with a rate held in a variable
  that the training loop ramps up.

Input size and channel count are free: global average pooling replaces the
reference's fixed pooling windows (``AdaptiveAvgPool2d(1)`` for CIFAR, identical;
``AvgPool2d(7)`` at 224×224 for ImageNet, identical there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gin
import keras
import tensorflow as tf

from il_tf.spaces.genotypes import Genotype
from il_tf.spaces.ops import (
    BN_EPSILON,
    BN_MOMENTUM,
    Conv,
    FactorizedReduce,
    Identity,
    batch_norm,
    make_op,
    relu_conv_bn,
    symmetric_pad,
)

NETWORK_KINDS = ("cifar", "imagenet")
#: The name prefix of the auxiliary head's layers and weights (excluded from counts).
AUXILIARY_HEAD_NAME = "auxiliary_head"


def drop_path_rate_weight(model: keras.Model) -> keras.Variable:
    """The network's drop-path rate: a float32 scalar the training loop ramps (not trained)."""
    return model.add_weight(
        shape=(),
        initializer="zeros",
        trainable=False,
        name="drop_path_rate",
        dtype="float32",
        autocast=False,
    )


@gin.configurable
@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Settings of an evaluation network (everything but the genotype and the data).

    Attributes:
      kind: "cifar" (one stem conv, for small images) or "imagenet" (three stride-2 stem
        convs, for large images).
      channels: C, the initial channel count (36 for the DARTS CIFAR network, 48 for ImageNet).
      layers: the number of cells N (20 CIFAR, 14 ImageNet).
      auxiliary: build the auxiliary head (used by training only).
    """

    kind: str = "cifar"
    channels: int = 36
    layers: int = 20
    auxiliary: bool = True

    def __post_init__(self) -> None:
        if self.kind not in NETWORK_KINDS:
            raise ValueError(
                f"NetworkConfig.kind must be one of {NETWORK_KINDS}, got {self.kind!r}"
            )
        for field, minimum in (("channels", 2), ("layers", 1)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(
                    f"NetworkConfig.{field} must be an int >= {minimum}, got {value!r}"
                )
        if self.channels % 2:
            # FactorizedReduce splits the channels in two halves (and ImageNet's stem uses C/2).
            raise ValueError(f"NetworkConfig.channels must be even, got {self.channels}")
        if not isinstance(self.auxiliary, bool):
            raise ValueError(
                f"NetworkConfig.auxiliary must be True or False, got {self.auxiliary!r}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def reduction_cells(layers: int) -> tuple[int, ...]:
    """Indices of the reduction cells of an N-cell network: N//3 and 2N//3 (as DARTS)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def auxiliary_cell(layers: int) -> int:
    """Index of the cell whose output feeds the auxiliary head (2N//3, as DARTS)."""
    return 2 * layers // 3


class DropPath(keras.layers.Layer):
    """Zeroes whole examples of an op's output with probability ``rate`` (training only).

    Kept examples are scaled by 1 / (1 - rate), as in the reference ``drop_path``.
    ``rate`` is a shared scalar variable owned by the network, so the training loop
    changes it without retracing. With a ``seed`` (a [2] int tensor), masks are a pure
    function of (seed, this layer's ``salt``, replica), so a resumed run draws the
    same masks.
    """

    def __init__(self, rate: keras.Variable, salt: int, **kwargs):
        super().__init__(**kwargs)
        self._rate = rate
        self.salt = salt

    def call(self, x, training=False, seed=None):
        if not training:
            return x
        keep = 1.0 - tf.cast(self._rate, tf.float32)
        shape = [tf.shape(x)[0], 1, 1, 1]
        if seed is None:
            noise = tf.random.uniform(shape)
        else:
            ctx = tf.distribute.get_replica_context()
            replica = ctx.replica_id_in_sync_group if ctx is not None else 0
            seed = tf.random.experimental.stateless_fold_in(seed, self.salt)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
            noise = tf.random.stateless_uniform(shape, seed)
        # floor(keep + U[0,1)) is 1 with probability keep; at rate 0 it is always 1.
        mask = tf.floor(keep + noise) / keep
        return x * tf.cast(mask, x.dtype)


class MaxPool3x3(keras.layers.Layer):
    """3×3 max-pooling with symmetric padding (PyTorch ``MaxPool2d(3, stride, 1)``).

    The final-network form of ``max_pool_3x3``. ``il_tf.spaces.ops.max_pool`` computes the
    same values, but through ``MaxPoolWithArgmax`` and a custom gradient that exist for
    exact second-order gradients during search; XLA cannot compile that op and TFLite
    has no builtin for it, while a trained network needs first-order gradients only.
    """

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, x):
        padded = symmetric_pad(x, 1, value=x.dtype.min)
        return tf.nn.max_pool2d(padded, 3, self.stride, "VALID")


def final_op(name: str, channels: int, stride: int) -> keras.layers.Layer:
    """Candidate op ``name`` in its final-network form (see MaxPool3x3 for the max-pool)."""
    if name == "max_pool_3x3":
        return MaxPool3x3(stride)
    return make_op(name, channels, stride, search=False)


class Cell(keras.layers.Layer):
    """One cell of a genotype network (normal or reduction)."""

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        drop_path_rate: keras.Variable,
        salt: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.preprocess0 = (
            FactorizedReduce(channels, search=False)
            if reduction_prev
            else relu_conv_bn(channels, 1, 1, search=False)
        )
        self.preprocess1 = relu_conv_bn(channels, 1, 1, search=False)
        cell_edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = tuple(index for _, index in cell_edges)
        self.ops = []
        self.drop_paths = []
        for k, (name, index) in enumerate(cell_edges):
            stride = 2 if reduction and index < 2 else 1
            op = final_op(name, channels, stride)
            self.ops.append(op)
            # The reference skips drop-path only on identities (stride-1 skip_connect).
            self.drop_paths.append(
                None if isinstance(op, Identity) else DropPath(drop_path_rate, salt + k)
            )

    @property
    def multiplier(self) -> int:
        return len(self.concat)

    def call(self, s0, s1, training=False, seed=None):
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for node in range(len(self.ops) // 2):
            total = None
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.indices[k]], training=training)
                if self.drop_paths[k] is not None:
                    h = self.drop_paths[k](h, training=training, seed=seed)
                total = h if total is None else total + h
            states.append(total)
        return tf.concat([states[i] for i in self.concat], axis=-1)


class AuxiliaryHead(keras.layers.Layer):
    """The DARTS auxiliary classifier (training only).

    ReLU, 5×5 average pooling without padding (stride 3 for CIFAR, where the input is
    8×8; stride 2 for ImageNet, whose input is 7×7 at 224×224), conv1×1 128, BN,
    ReLU, conv2×2 768, [BN,] ReLU, linear. The reference ImageNet head has no BN after
    the 2×2 conv (commented out there "for consistency with the experiments in the
    paper"), so ``bn_after_768=False`` for it. The reference flattens a 1×1 map; on
    other input sizes the pooling window and the 2×2 kernel are clipped to the map
    and the result is averaged globally, so any input size works.
    """

    def __init__(self, num_classes: int, pool_stride: int, bn_after_768: bool, **kwargs):
        super().__init__(**kwargs)
        self.pool_stride = pool_stride
        self.conv1 = keras.layers.Conv2D(128, 1, use_bias=False, name="conv1x1")
        self.bn1 = _final_bn("bn1")
        self.conv2: keras.layers.Conv2D | None = None
        self.bn2 = _final_bn("bn2") if bn_after_768 else None
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    def build(self, input_shape):
        height, width = int(input_shape[1]), int(input_shape[2])
        self.pool = min(5, height, width)
        pooled_h = (height - self.pool) // self.pool_stride + 1
        pooled_w = (width - self.pool) // self.pool_stride + 1
        kernel = min(2, pooled_h, pooled_w)
        self.conv2 = keras.layers.Conv2D(768, kernel, use_bias=False, name="conv2x2")

    def call(self, x, training=False):
        x = tf.nn.relu(x)
        x = tf.nn.avg_pool2d(x, self.pool, self.pool_stride, "VALID")
        x = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        x = self.conv2(x)
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = tf.reduce_mean(tf.nn.relu(x), axis=[1, 2])
        return self.classifier(x)


def _final_bn(name: str | None = None) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


class _Stem(keras.layers.Layer):
    """Applies a list of layers in order, passing ``training`` to each (a stem)."""

    def __init__(self, steps: Sequence, **kwargs):
        super().__init__(**kwargs)
        self.steps = list(steps)

    def call(self, x, training=False):
        for step in self.steps:
            x = step(x, training=training) if isinstance(step, keras.layers.Layer) else step(x)
        return x


class GenotypeNetwork(keras.Model):
    """Base of the evaluation networks: cells, auxiliary head, pooling, classifier.

    ``call(images, training=False, seed=None, with_aux=False)`` returns logits
    ``[B, num_classes]`` (float32 under mixed precision too), or ``(logits,
    aux_logits)`` with ``with_aux=True`` (``aux_logits`` is None without a head).
    ``drop_path_rate`` is a scalar variable: set it with ``.assign``.
    """

    def __init__(
        self,
        genotype: Genotype,
        num_classes: int,
        config: NetworkConfig,
        reduction_prev: bool,
        aux_pool_stride: int,
        aux_bn_after_768: bool,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(genotype, Genotype):
            raise TypeError(
                f"a genotype network needs a DARTS Genotype, got {type(genotype).__name__}"
            )
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        self.genotype = genotype
        self.num_classes = num_classes
        self.config = config
        self.drop_path_rate = drop_path_rate_weight(self)
        layers = config.layers
        c_curr = config.channels
        self.cells = []
        reductions = reduction_cells(layers)
        salt = 0
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(
                genotype,
                c_curr,
                reduction,
                reduction_prev,
                self.drop_path_rate,
                salt,
                name=f"cell_{i}",
            )
            salt += len(cell.ops)
            reduction_prev = reduction
            self.cells.append(cell)
        self.aux_index = auxiliary_cell(layers)
        self.auxiliary_head = (
            AuxiliaryHead(num_classes, aux_pool_stride, aux_bn_after_768, name=AUXILIARY_HEAD_NAME)
            if config.auxiliary
            else None
        )
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    def stem(self, images, training):
        """(s0, s1), the two states entering the first cell."""
        raise NotImplementedError

    def call(self, images, training=False, seed=None, with_aux=False):
        s0, s1 = self.stem(images, training)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, training=training, seed=seed)
            if i == self.aux_index and with_aux and self.auxiliary_head is not None:
                aux_logits = self.auxiliary_head(s1, training=training)
        logits = self.classifier(tf.reduce_mean(s1, axis=[1, 2]))
        return (logits, aux_logits) if with_aux else logits


class NetworkCIFAR(GenotypeNetwork):
    """The DARTS CIFAR evaluation network (one stride-1 stem conv)."""

    def __init__(self, genotype: Genotype, num_classes: int, config: NetworkConfig, **kwargs):
        super().__init__(genotype, num_classes, config, False, 3, True, **kwargs)
        c_stem = 3 * config.channels
        self.stem_layers = _Stem([Conv(c_stem, 3), batch_norm(False)], name="stem")

    def stem(self, images, training):
        s = self.stem_layers(images, training=training)
        return s, s


class NetworkImageNet(GenotypeNetwork):
    """The DARTS ImageNet (mobile setting) evaluation network: three stride-2 stem convs."""

    def __init__(self, genotype: Genotype, num_classes: int, config: NetworkConfig, **kwargs):
        # The first cell's s0 (stem0) has twice stem1's resolution: reduction_prev=True.
        super().__init__(genotype, num_classes, config, True, 2, False, **kwargs)
        c = config.channels
        self.stem0 = _Stem(
            [
                Conv(c // 2, 3, 2),
                batch_norm(False),
                tf.nn.relu,
                Conv(c, 3, 2),
                batch_norm(False),
            ],
            name="stem0",
        )
        self.stem1 = _Stem([tf.nn.relu, Conv(c, 3, 2), batch_norm(False)], name="stem1")

    def stem(self, images, training):
        s0 = self.stem0(images, training=training)
        return s0, self.stem1(s0, training=training)


def build_network(
    genotype: Genotype,
    num_classes: int,
    image_shape: Sequence[int],
    config: NetworkConfig | None = None,
) -> GenotypeNetwork:
    """Builds (creates all weights of) the evaluation network of ``genotype``.

    Args:
      genotype: the DARTS cell pair.
      num_classes: classifier outputs.
      image_shape: (height, width, channels) of the input images, any size.
      config: network settings; default ``NetworkConfig()`` (the DARTS CIFAR network).

    A genotype of a searched Keras builder (space ``choices``) gives that builder's
    network instead (``il_tf/models/choice_network.py``; ``config`` does not apply).
    """
    if getattr(genotype, "space", None) == "choices":
        from il_tf.models.choice_network import build_choice_network

        return build_choice_network(genotype, num_classes, image_shape)
    config = NetworkConfig() if config is None else config
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (height, width, channels) > 0, got {image_shape!r}")
    cls = NetworkCIFAR if config.kind == "cifar" else NetworkImageNet
    model = cls(genotype, num_classes, config, name=f"network_{config.kind}")
    # One eager forward pass (batch 1) creates every weight, the auxiliary head's too.
    model(tf.zeros((1, *shape)), training=False, with_aux=True)
    return model
