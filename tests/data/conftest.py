"""Fixtures for the data tests: small image folders built from the real CIFAR-10 folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def link_images(source_root: Path, target_root: Path, per_split: dict[str, int]) -> Path:
    """A folder of symlinks to the first few images of every class (nothing is copied)."""
    for split, count in per_split.items():
        for class_dir in sorted((source_root / split).iterdir()):
            target = target_root / split / class_dir.name
            target.mkdir(parents=True)
            for name in sorted(os.listdir(class_dir))[:count]:
                (target / name).symlink_to(class_dir / name)
    return target_root


@pytest.fixture(scope="session")
def small_cifar_folder(cifar10_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10 as ROOT/<split>/<class>/*.jpg with 12 train and 4 test images per class."""
    root = tmp_path_factory.mktemp("small_cifar10")
    return link_images(cifar10_folder, root, {"train": 12, "test": 4})
