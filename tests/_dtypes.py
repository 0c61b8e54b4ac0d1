"""Building Keras layers in another float dtype (float64 for gradient checks)."""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def float_dtype(dtype: str):
    """Layers created inside get ``dtype`` variables and compute in ``dtype``.

    ``keras.config.set_floatx`` alone is not enough: Keras caches the global dtype
    policy when the first layer is created, and new layers follow that policy.
    """
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)
