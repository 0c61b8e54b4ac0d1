"""Every shipped gin config parses and binds only names that exist."""

from __future__ import annotations

from pathlib import Path

import gin
import pytest

from il_tf import cli

from .conftest import PROJECT_ROOT, SHARED_DATA

CONFIGS = sorted(
    p
    for p in (PROJECT_ROOT / "gin_configs").rglob("*.gin")
    if "common" not in p.relative_to(PROJECT_ROOT / "gin_configs").parts
)


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_config_parses(path: Path, clean_gin):
    cli.register_configurables()
    gin.add_config_file_search_path(str(PROJECT_ROOT))
    gin.parse_config_file(str(path))
    text = path.read_text()
    assert text.lstrip().startswith("#"), "each config begins with a comment giving its command"
    if "SearchConfig." in text:
        from il_tf.learning.search import SearchConfig

        if "../shared/data" in text and not SHARED_DATA.is_dir():
            # Parsed above; building it opens the offline data its learners name.
            pytest.skip(f"{path.name} reads the offline data folder {SHARED_DATA}, absent here")

        config = SearchConfig()
        assert config.learners
