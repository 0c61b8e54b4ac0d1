"""A NAS-Bench-201 search on real CIFAR-10 images reports looked-up accuracies."""

from __future__ import annotations

import functools
import json

import pytest

from il_tf.data.learners import Learner
from il_tf.data.sources import ImageFolderSource
from il_tf.learning.search import SearchConfig, run_search
from il_tf.spaces.factories import nb201_supernet
from il_tf.spaces.genotypes import load_genotype_with_metadata
from il_tf.spaces.nb201_genotype import NB201Genotype


@pytest.mark.slow
def test_nb201_search_reports_lookup(tmp_path, cifar10_folder, nb201_table_path, capsys):
    source = ImageFolderSource(str(cifar10_folder))
    learners = (
        Learner(
            "vehicles",
            source,
            classes=["airplane", "automobile", "ship", "truck"],
            image_size=16,
            batch_size=8,
            val_fraction=0.95,
        ),
        Learner(
            "animals",
            source,
            classes=["cat", "dog", "deer", "horse"],
            image_size=16,
            batch_size=8,
            val_fraction=0.95,
        ),
    )
    config = SearchConfig(
        learners=learners,
        supernet=functools.partial(nb201_supernet, channels=4, cells_per_stage=1),
        method="first_order",
        epochs=1,
        iterations_per_epoch=2,
        eval_batches=1,
        draw=True,
        nb201_table=str(nb201_table_path),
    )
    result = run_search(config, tmp_path)
    assert isinstance(result.genotype, NB201Genotype)
    genotype, meta = load_genotype_with_metadata(result.genotype_path)
    assert genotype == result.genotype
    lookup = meta["nb201"]
    assert lookup["arch"] == genotype.to_arch_string()
    for key in ("cifar10_test", "cifar100_test", "imagenet16_test", "params_m", "flops_m"):
        assert isinstance(lookup[key], float)
    assert 0 < lookup["cifar10_test"] <= 100
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["nb201"]["cifar10_test"] == lookup["cifar10_test"]
    assert "NAS-Bench-201 look-up: CIFAR-10 test" in capsys.readouterr().out
    assert (tmp_path / "genotype_cell.gv").is_file()


def test_nb201_table_with_darts_space_is_refused(tmp_path, nb201_table_path):
    config = SearchConfig(nb201_table=str(nb201_table_path), epochs=1, iterations_per_epoch=1)
    with pytest.raises(ValueError, match="NAS-Bench-201 space"):
        run_search(config, tmp_path)
