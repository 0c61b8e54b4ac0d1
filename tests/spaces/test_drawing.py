"""Tests for il_tf.spaces.drawing (renders only when the Graphviz `dot` binary exists)."""

from __future__ import annotations

import shutil

import pytest

from il_tf.spaces.drawing import CellGraph, DrawingUnavailable, cell_graphs, draw_genotype
from il_tf.spaces.genotypes import DARTS_V2


def test_darts_cell_graph_describes_the_cell():
    graphs = cell_graphs(DARTS_V2)
    assert list(graphs) == ["normal", "reduce"]
    normal = graphs["normal"]
    assert [i for i, _ in normal.inputs] == ["c_{k-2}", "c_{k-1}"]
    assert [n for n, _ in normal.nodes] == ["0", "1", "2", "3"]
    assert normal.outputs == (("c_{k}", "c_{k}"),)
    # DARTS_V2 normal node 3 = (skip_connect from c_{k-2}, dil_conv_3x3 from node 0).
    assert ("c_{k-2}", "3", "skip_connect") in normal.edges
    assert ("0", "3", "dil_conv_3x3") in normal.edges
    assert [e for e in normal.edges if e[1] == "c_{k}"] == [(n, "c_{k}", "") for n in "0123"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` binary not installed")
def test_draw_writes_png_svg_and_source(tmp_path):
    out = tmp_path / "figs"
    paths = draw_genotype(DARTS_V2, out, basename="best")
    assert paths == [
        out / "best_normal.png",
        out / "best_normal.svg",
        out / "best_reduce.png",
        out / "best_reduce.svg",
    ]
    for p in paths:
        assert p.stat().st_size > 0
    assert (out / "best_normal.png").read_bytes().startswith(b"\x89PNG")
    svg = (out / "best_reduce.svg").read_text()
    assert "<svg" in svg and "max_pool_3x3" in svg
    assert "sep_conv_3x3" in (out / "best_normal.gv").read_text()


def test_missing_dot_raises_with_install_hint_and_still_writes_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no `dot` reachable
    with pytest.raises(DrawingUnavailable) as info:
        draw_genotype(DARTS_V2, tmp_path, formats=("png",))
    message = str(info.value)
    assert "`dot` binary is not on PATH" in message
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda install graphviz"):
        assert hint in message
    sources = [tmp_path / "genotype_normal.gv", tmp_path / "genotype_reduce.gv"]
    assert info.value.sources == sources
    assert all(str(p) in message and p.read_text().startswith("digraph") for p in sources)
    assert not (tmp_path / "genotype_normal.png").exists()
    assert isinstance(info.value, RuntimeError)  # a search loop can catch it and continue


def test_no_formats_needs_no_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert draw_genotype(DARTS_V2, tmp_path, formats=()) == []
    assert (tmp_path / "genotype_reduce.gv").is_file()


def test_other_spaces_plug_in_through_cell_graphs(tmp_path):
    class OneCell:
        def cell_graphs(self):
            return {
                "cell": CellGraph(
                    inputs=(("0", "in"),),
                    nodes=(("1", "1"),),
                    outputs=(("2", "out"),),
                    edges=(("0", "1", "nor_conv_3x3"), ("1", "2", "skip_connect")),
                )
            }

    draw_genotype(OneCell(), tmp_path, basename="nb", formats=())
    assert "nor_conv_3x3" in (tmp_path / "nb_cell.gv").read_text()
    with pytest.raises(TypeError, match="cannot draw a object"):
        cell_graphs(object())


def test_nb201_cell_drawing_sources(tmp_path):
    from il_tf.spaces.drawing import cell_graphs
    from il_tf.spaces.nb201_genotype import NB201Genotype

    g = NB201Genotype.from_arch_string(
        "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|none~2|"
    )
    graph = cell_graphs(g)["cell"]
    assert ("0", "1", "nor_conv_3x3") in graph.edges
    assert all(op != "none" for _, _, op in graph.edges)
    assert len(graph.edges) == 4
    draw_genotype(g, tmp_path, formats=())
    assert (tmp_path / "genotype_cell.gv").is_file()
