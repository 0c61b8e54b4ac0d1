"""Search plots drawn from the per-epoch genotype records."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from il_tf.learning import plots  # noqa: E402
from il_tf.spaces.nb201_genotype import NB201_OPS  # noqa: E402


def _write_epochs(workdir, n, lookup=True, step=1.0):
    history = workdir / "genotypes"
    history.mkdir(parents=True)
    for epoch in range(1, n + 1):
        alpha = np.zeros((6, 5))
        alpha[:, 1] = step * epoch  # skip_connect grows
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


def test_deviation_from_uniform_sums_to_zero_per_edge():
    weights = np.array([[0.2, 0.2, 0.2, 0.2, 0.2], [0.6, 0.1, 0.1, 0.1, 0.1]])
    d = plots.deviation_from_uniform(weights)
    np.testing.assert_allclose(d, [[0, 0, 0, 0, 0], [0.4, -0.1, -0.1, -0.1, -0.1]])
    np.testing.assert_allclose(d.sum(-1), 0.0, atol=1e-12)


def _alpha_panels(fig):
    return [ax for ax in fig.axes if ax.get_title().startswith("cell edge")]


@pytest.mark.parametrize("step", [0.1, 1.0])
def test_alpha_panels_show_the_deviation_on_an_axis_scaled_to_it(tmp_path, step):
    # A search whose α moved little (logits up to 0.2) and one that moved much (2): both
    # are drawn on an axis just wider than the largest deviation, not on 0–1.
    import matplotlib.pyplot as plt

    _write_epochs(tmp_path, 2, lookup=False, step=step)
    fig = plots.search_figure(tmp_path, NB201_OPS)
    try:
        panels = _alpha_panels(fig)
        assert len(panels) == 6
        _, alphas = plots.alpha_history(plots.read_history(tmp_path))
        largest = np.abs(alphas["cell"] - 1 / 5).max()
        for ax in panels:
            low, high = ax.get_ylim()
            assert low == -high
            assert largest < high <= 1.2 * largest
            # The grey uniform line at 0, then one line per op: softmax − 1/5.
            lines = ax.get_lines()
            assert list(lines[0].get_ydata()) == [0.0, 0.0]
            skip = lines[1 + NB201_OPS.index("skip_connect")]
            np.testing.assert_allclose(skip.get_ydata(), alphas["cell"][:, 0, 1] - 1 / 5)
    finally:
        plt.close(fig)


def test_alpha_panels_of_an_unmoved_alpha_keep_a_readable_axis(tmp_path):
    # Uniform α (an epoch of weight-only warm-up): flat lines at 0 on a small fixed
    # axis, not an axis stretched over rounding noise.
    import matplotlib.pyplot as plt

    _write_epochs(tmp_path, 1, lookup=False, step=0.0)
    fig = plots.search_figure(tmp_path, NB201_OPS)
    try:
        for ax in _alpha_panels(fig):
            low, high = ax.get_ylim()
            assert high == -low == plots.deviation_limit([np.zeros(1)]) > 0
    finally:
        plt.close(fig)
