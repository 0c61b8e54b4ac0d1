"""Learners' data: sources, augmentation and tf.data pipelines."""
