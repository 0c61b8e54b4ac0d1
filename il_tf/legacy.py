"""What earlier il_tf versions wrote or accepted, read by this one: the one place that knows it.

- Run records (``run.json``) before the format ``il_tf.run/v2`` (``il_tf.rundir.FORMAT``):
  ``il_tf.train_run/v1`` (training: the latest start's settings, no history of starts)
  and ``{"fingerprint": settings}`` (search and tuning: only the settings that had to
  match). :func:`upgrade_record` reads both as v2; a search or tuning record of the
  fingerprint kind is compared in the settings it holds (:func:`search_settings`), and
  the first start that does work writes a v2 record.
- Tuning kept its record in ``tuning.json`` (:data:`TUNING_SETTINGS_FILE`).
- Search checkpoints written before the epoch's running statistics were checkpointed
  (:func:`check_restored`).
- Hypergradient methods that were renamed (:data:`RENAMED_METHODS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Training run records before the v2 format.
TRAIN_FORMAT_V1 = "il_tf.train_run/v1"
#: Where tuning kept ``{"fingerprint": settings}`` before ``run.json``.
TUNING_SETTINGS_FILE = "tuning.json"
#: Names of earlier releases, with the method each now is.
RENAMED_METHODS = {"finite_difference": "per_learner_finite_difference"}


def upgrade_record(record: Mapping[str, Any], kind: str, run_format: str) -> dict[str, Any]:
    """A run record of an earlier format as a ``run_format`` record (others unchanged).

    An upgraded fingerprint record carries ``"legacy": True``: it holds fewer settings
    than a start compares (``il_tf.rundir.RunDir.check``).
    """
    if record.get("format") == TRAIN_FORMAT_V1:
        settings = {k: v for k, v in record.items() if k != "format"}
        return {"format": run_format, "kind": "train", "settings": settings, "starts": []}
    if "fingerprint" in record and "format" not in record:
        return {
            "format": run_format,
            "kind": kind,
            "settings": record["fingerprint"],
            "starts": [],
            "legacy": True,
        }
    return dict(record)


def search_settings(fingerprint: Mapping[str, Any], encoder) -> dict[str, Any]:
    """What a search's fingerprint record held: ``SearchConfig.fingerprint()`` and the
    supernet's weight and architecture shapes."""
    return {
        **fingerprint,
        "supernet": {
            "weights": [list(v.shape) for v in encoder.weights],
            "arch": {k: list(v) for k, v in encoder.arch_shapes().items()},
        },
    }


def check_restored(status, names: set[str]) -> bool:
    """Checks a restored search checkpoint; False when it predates the running statistics.

    ``status`` is what ``tf.train.Checkpoint.restore`` returned, ``names`` the
    checkpoint's variable names. Such a checkpoint restores every variable but
    ``epoch_stats``: the resumed epoch's train statistics then cover only the
    iterations run after it.
    """
    if any(name.startswith("epoch_stats/") for name in names):
        status.assert_consumed()
        return True
    status.assert_existing_objects_matched()
    return False


def renamed_method(name: str) -> ValueError | None:
    """The error for a hypergradient method's old name (None for any other name)."""
    if name not in RENAMED_METHODS:
        return None
    return ValueError(
        f"hypergradient method {name!r} is now called {RENAMED_METHODS[name]!r} (what it "
        "computes: one step per learner, other stages held constant); the chain "
        "through all stages is 'chain_finite_difference' (the default) or 'chain_exact'"
    )
