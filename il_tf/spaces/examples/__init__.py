"""Example search spaces written as ordinary Keras builders with choice points."""
