"""Search plots drawn from the per-epoch genotype records."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from il_tf.learning import plots  # noqa: E402
from il_tf.spaces.nb201_genotype import NB201_OPS  # noqa: E402


def _write_epochs(workdir, n, lookup=True):
    history = workdir / "genotypes"
    history.mkdir(parents=True)
    for epoch in range(1, n + 1):
        alpha = np.zeros((6, 5))
        alpha[:, 1] = epoch  # skip_connect grows
        record = {"genotype": {}, "epoch": epoch, "alpha": {"cell": alpha.tolist()}}
        if lookup:
            record["nb201"] = {"cifar10_test": 90.0 - epoch, "cifar100_test": 60.0,
                               "imagenet16_test": 30.0}  # fmt: skip
        (history / f"epoch_{epoch:03d}.json").write_text(json.dumps(record))


def test_alpha_history_is_the_softmax_per_epoch(tmp_path):
    _write_epochs(tmp_path, 3)
    epochs, alphas = plots.alpha_history(plots.read_history(tmp_path))
    assert epochs == [1, 2, 3]
    a = alphas["cell"]
    assert a.shape == (3, 6, 5)
    np.testing.assert_allclose(a.sum(-1), 1.0)
    expected = np.exp(3) / (np.exp(3) + 4)
    np.testing.assert_allclose(a[2, 0, 1], expected)
    assert (np.diff(a[:, 0, 1]) > 0).all()


@pytest.mark.parametrize("lookup", [True, False])
def test_plot_is_a_png_next_to_the_genotype(tmp_path, lookup):
    _write_epochs(tmp_path, 2, lookup)
    out = plots.write_search_plot(tmp_path, NB201_OPS)
    assert out == tmp_path / plots.PLOT_NAME
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_records_no_plot(tmp_path):
    assert plots.write_search_plot(tmp_path, NB201_OPS) is None
    assert not (tmp_path / plots.PLOT_NAME).exists()
