"""il_tf: interleaving learning (IL) for neural architecture search in TensorFlow / Keras 3."""

__version__ = "0.1.0"
