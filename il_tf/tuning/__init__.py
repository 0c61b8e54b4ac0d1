"""Tuning with keras-tuner: the settings of the interleaved search, and a random baseline.

* ``TuneConfig`` (gin): mode (``search`` / ``random``), objective, oracle, hyperparameters.
* ``run_tuning(config, project_dir)``: runs or resumes a tuning; returns a ``TuningResult``.
* ``ILTuner``: the keras-tuner ``Tuner`` (one trial = one search, or one random cell).
* ``SearchHyperModel``, ``RandomDartsHyperModel``, ``RandomNB201HyperModel``: what a trial
  evaluates, drawn from keras-tuner hyperparameters.

See docs/tuning.md and tools/tune.py.
"""

# TensorFlow, loaded without its uninformative native start-up lines (il_tf/native_logs.py).
from il_tf import native_logs as _native_logs

_native_logs.import_tensorflow(min_log_level=None)

from il_tf.tuning.config import (  # noqa: E402
    MODES,
    OBJECTIVES,
    ORACLES,
    SPACES,
    TUNABLE_SETTINGS,
    HyperparameterSpec,
    TuneConfig,
    apply_hyperparameters,
    parse_hyperparameters,
)
from il_tf.tuning.hypermodels import (  # noqa: E402
    RandomDartsHyperModel,
    RandomNB201HyperModel,
    SearchHyperModel,
    darts_input_pairs,
    tuned_values,
)
from il_tf.tuning.tuner import (  # noqa: E402
    SUMMARY_FILE,
    TRIAL_RECORD,
    ILTuner,
    TrialRecord,
    TuningError,
    TuningResult,
    make_hypermodel,
    make_oracle,
    run_tuning,
)

__all__ = [
    "MODES",
    "OBJECTIVES",
    "ORACLES",
    "SPACES",
    "SUMMARY_FILE",
    "TRIAL_RECORD",
    "TUNABLE_SETTINGS",
    "HyperparameterSpec",
    "ILTuner",
    "RandomDartsHyperModel",
    "RandomNB201HyperModel",
    "SearchHyperModel",
    "TrialRecord",
    "TuneConfig",
    "TuningError",
    "TuningResult",
    "apply_hyperparameters",
    "darts_input_pairs",
    "make_hypermodel",
    "make_oracle",
    "parse_hyperparameters",
    "run_tuning",
    "tuned_values",
]
