"""Training pieces: settings, the reference SGD, global clipping across replicas, loss."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from il_tf.data.learners import Learner, build_learner_data
from il_tf.data.sources import ImageFolderSource
from il_tf.models.networks import NetworkConfig
from il_tf.spaces.genotypes import get_published
from il_tf.training.loop import TrainConfig
from il_tf.training.optim import DynamicLossScale, ReferenceSGD
from il_tf.training.trainer import Trainer, clip_by_global_norm, per_example_loss

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "TrainConfig.epochs must be an int >= 1, got 0"),
        ("learning_rate", -0.1, "TrainConfig.learning_rate must be a number > 0, got -0.1"),
        ("lr_schedule", "step", "TrainConfig.lr_schedule must be one of"),
        ("mixed_precision", "float16", "'mixed_float16'"),
        ("drop_path_rate", 1.0, "TrainConfig.drop_path_rate"),
        ("label_smoothing", -1, "TrainConfig.label_smoothing"),
        ("eval_split", "train", "TrainConfig.eval_split must be None, 'val' or 'test'"),
        ("steps_per_run", 0, "TrainConfig.steps_per_run"),
        ("grad_clip_norm", float("nan"), "TrainConfig.grad_clip_norm"),
    ],
)
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_reference_sgd_is_pytorch_sgd_with_coupled_weight_decay():
    var = tf.Variable([1.0, -2.0])
    opt = ReferenceSGD([var], momentum=0.9, weight_decay=0.1)
    w, buf = np.array([1.0, -2.0]), np.zeros(2)
    for g, lr in (([0.5, 1.0], 0.1), ([-1.0, 2.0], 0.05)):  # the rate changes between steps
        opt.apply([tf.constant(g)], [var], tf.constant(lr))
        buf = 0.9 * buf + (np.array(g) + 0.1 * w)
        w = w - lr * buf
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
    # A rejected step (non-finite float16 gradients) changes nothing.
    opt.apply([tf.constant([np.nan, 1.0])], [var], tf.constant(0.1), apply_update=False)
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(opt.buffers[0].numpy(), buf, rtol=1e-6)


def test_clipping_matches_torch_clip_grad_norm():
    grads = [tf.constant([3.0, 4.0]), tf.constant([12.0])]  # norm 13
    clipped, norm = clip_by_global_norm(grads, 5.0)
    assert float(norm) == pytest.approx(13.0)
    np.testing.assert_allclose(clipped[0].numpy(), [3 * 5 / 13, 4 * 5 / 13], rtol=1e-5)
    unclipped, _ = clip_by_global_norm(grads, 0.0)
    np.testing.assert_array_equal(unclipped[1].numpy(), [12.0])


def test_dynamic_loss_scale_skips_and_halves():
    scale = DynamicLossScale(initial_scale=8.0, growth_interval=2)
    grads, finite = scale.unscale([tf.constant([8.0, np.inf])])
    assert not bool(finite)
    scale.update(finite)
    assert float(scale.scale.numpy()) == 4.0
    for _ in range(2):
        _, finite = scale.unscale([tf.constant([4.0])])
        scale.update(finite)
    assert float(scale.scale.numpy()) == 8.0


def test_label_smoothing_loss():
    logits = tf.constant([[2.0, 0.0, -1.0]])
    labels = tf.constant([0])
    p = tf.nn.log_softmax(logits)[0].numpy()
    expected = -(0.9 + 0.1 / 3) * p[0] - (0.1 / 3) * (p[1] + p[2])
    got = per_example_loss(labels, logits, 3, label_smoothing=0.1)
    assert float(got[0]) == pytest.approx(expected, rel=1e-6)


_TWO_REPLICAS = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    from il_tf.distribute import use_logical_cpus
    devices = use_logical_cpus(2)
    import tensorflow as tf
    from il_tf.training.optim import ReferenceSGD
    from il_tf.training.trainer import clip_by_global_norm, sum_across_replicas

    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        var = tf.Variable([1.0, -2.0, 3.0])
        opt = ReferenceSGD([var], momentum=0.9, weight_decay=0.1)
    local = tf.constant([[3.0, 4.0, 0.0], [6.0, 8.0, 12.0]])

    @tf.function
    def step():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grads = sum_across_replicas([tf.gather(local, replica)])
            grads, norm = clip_by_global_norm(grads, 5.0)
            opt.apply(grads, [var], tf.constant(0.1))
            return norm
        return strategy.run(replica_fn)

    for _ in range(2):
        norms = strategy.experimental_local_results(step())
    values = [v.numpy().tolist() for v in var.values]
    print(repr({"values": values, "norms": [float(n) for n in norms]}))
    """
)


def _run_script(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh Python (logical devices must be set before TF starts)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_replicas_clip_the_global_gradient_and_stay_identical():
    out = _run_script(_TWO_REPLICAS)
    result = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 (our own repr)
    # One device on the whole batch: gradient = sum of the two local ones, clipped once.
    w, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3)
    g = np.array([9.0, 12.0, 12.0])
    for _ in range(2):
        clipped = g * min(1.0, 5.0 / (np.linalg.norm(g) + 1e-6))
        buf = 0.9 * buf + clipped + 0.1 * w
        w = w - 0.1 * buf
    first, second = result["values"]
    assert first == second  # replicas bit-identical
    np.testing.assert_allclose(first, w, rtol=1e-5)
    assert result["norms"][0] == pytest.approx(np.linalg.norm(g), rel=1e-5)


def _link_images(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    for split, count in per_class.items():
        for class_dir in sorted((source / split).iterdir()):
            (target / split / class_dir.name).mkdir(parents=True)
            for name in sorted(os.listdir(class_dir))[:count]:
                (target / split / class_dir.name / name).symlink_to(class_dir / name)
    return target


def test_a_few_steps_lower_the_loss_on_cifar10(cifar10_folder, tmp_path):
    root = _link_images(cifar10_folder, tmp_path / "cifar", {"train": 8, "test": 1})
    learner = Learner(
        "cifar_subset",
        source=ImageFolderSource(root),
        val_fraction=0.0,
        batch_size=40,
        random_crop=False,
        flip=False,
    )
    data = build_learner_data(learner, seed=0)
    trainer = Trainer(
        get_published("DARTS_V2"),
        NetworkConfig(channels=8, layers=3),
        data.num_classes,
        data.image_shape,
        data.batch_size,
        tf.distribute.MirroredStrategy(["/cpu:0"]),
        weight_decay=3e-4,
    )
    trainer.learning_rate.assign(0.05)
    batch = next(iter(trainer.strategy.experimental_distribute_dataset(data.train_dataset())))
    losses = []
    for step in range(8):
        out = trainer.train_step(batch, tf.constant([0, step], tf.int64))
        losses.append(float(out["loss_sum"]) / float(out["count"]))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses


_TRAINER_TWO_REPLICAS = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    from il_tf.distribute import use_logical_cpus
    devices = use_logical_cpus(2)
    import tensorflow as tf
    from il_tf.data.learners import Learner, build_learner_data
    from il_tf.models.networks import NetworkConfig
    from il_tf.training.trainer import Trainer
    from il_tf.spaces.genotypes import get_published

    import keras
    keras.utils.set_random_seed(0)  # the same initial weights in every run
    data = build_learner_data(Learner("digits", val_fraction=0.0, batch_size=16), seed=0)
    strategy = tf.distribute.MirroredStrategy(devices)
    trainer = Trainer(get_published("DARTS_V2"), NetworkConfig(channels=4, layers=3),
                      data.num_classes, data.image_shape, data.batch_size, strategy,
                      mixed_precision="mixed_float16")
    trainer.learning_rate.assign(0.05)
    trainer.model.drop_path_rate.assign(0.2)
    batches = iter(strategy.experimental_distribute_dataset(data.train_dataset()))
    for step in range(3):
        out = trainer.train_step(next(batches), tf.constant([0, step], tf.int64))
    # float16 gradients may overflow: the loss scale then skips that step (and says so).
    assert np.isfinite(float(out["loss_sum"])), out
    assert np.isfinite(float(out["grad_norm"])) or float(out["skipped"]) == 1.0, out
    same = all(
        np.array_equal(v.value.values[0].numpy(), v.value.values[1].numpy())
        for v in trainer.model.trainable_variables
    )
    print("identical" if same else "DIFFERENT", float(trainer.loss_scale.scale.values[0].numpy()))
    """
)


@pytest.mark.slow
def test_full_train_step_under_two_replicas_in_float16():
    out = _run_script(_TRAINER_TWO_REPLICAS)
    assert out.stdout.strip().splitlines()[-1].startswith("identical"), out.stdout
