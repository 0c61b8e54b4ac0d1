"""Shared pytest fixtures and settings for the il_tf test suite."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from ._dtypes import float_dtype  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Real benchmark data lives next to the project (never inside it); see ../shared/data/README.md.
SHARED_DATA = Path(os.environ.get("IL_TF_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline benchmark data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent (set IL_TF_SHARED_DATA to use another)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar10_folder(shared_data: Path) -> Path:
    """The CIFAR-10 image folder (ROOT/<split>/<class>/*.jpg); skips when absent."""
    root = shared_data / "cifar10"
    if not (root / "train").is_dir():
        pytest.skip(f"CIFAR-10 image folder {root} is absent")
    return root


@pytest.fixture(scope="session")
def nb201_table_path(shared_data: Path) -> Path:
    """The NAS-Bench-201 look-up table (gzip JSON); skips when absent."""
    path = shared_data / "nasbench201.json.gz"
    if not path.is_file():
        pytest.skip(f"NAS-Bench-201 table {path} is absent")
    return path


@pytest.fixture
def float64():
    """Keras layers created in the test are float64 (for finite-difference checks)."""
    with float_dtype("float64"):
        yield
