"""The found network of a searched Keras builder, as training and export use it.

:class:`ChoiceNetwork` has the interface of the genotype networks of
``il_tf/models/networks.py`` (``call(images, training, seed, with_aux)``, a
``drop_path_rate`` variable), so that ``tools/train.py`` trains it and
``tools/export.py`` exports it unchanged: the builder's backbone with the genotype's
candidates (``il_tf.spaces.choice_space.build_backbone``), then a linear classifier.
It has no auxiliary head and no drop-path (the builder's own layers are all there is),
so ``NetworkConfig`` and ``TrainConfig.drop_path_rate`` do not apply to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from il_tf.models.networks import drop_path_rate_weight
from il_tf.spaces.choice_genotype import ChoiceGenotype
from il_tf.spaces.choice_space import build_backbone


class ChoiceNetwork(keras.Model):
    """Backbone (the kept candidates only) and classifier; logits in float32."""

    def __init__(
        self,
        genotype: ChoiceGenotype,
        num_classes: int,
        image_shape: Sequence[int],
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        self.genotype = genotype
        self.num_classes = num_classes
        self.backbone = build_backbone(genotype, image_shape)
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")
        # The training loop ramps this; nothing here reads it (no drop-path).
        self.drop_path_rate = drop_path_rate_weight(self)

    def call(self, images, training=False, seed=None, with_aux=False):
        logits = self.classifier(self.backbone(images, training=training))
        return (logits, None) if with_aux else logits


def build_choice_network(
    genotype: ChoiceGenotype, num_classes: int, image_shape: Sequence[int]
) -> ChoiceNetwork:
    """Builds (creates every weight of) the found network of ``genotype``."""
    shape = tuple(int(d) for d in image_shape)
    model = ChoiceNetwork(genotype, num_classes, shape, name="choice_network")
    model(tf.zeros((1, *shape)), training=False)
    return model
