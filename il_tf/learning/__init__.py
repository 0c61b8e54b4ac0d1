"""Interleaving schedules, hypergradient methods and the search loop."""

# TensorFlow, loaded without its uninformative native start-up lines (il_tf/native_logs.py).
from il_tf import native_logs as _native_logs

_native_logs.import_tensorflow(min_log_level=None)
