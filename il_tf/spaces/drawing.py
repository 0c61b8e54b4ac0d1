"""Cell drawings with Graphviz: a ``.gv`` source always, PNG/SVG when ``dot`` is installed.

Drawing goes in two steps so that new search spaces only add a description:
:func:`cell_graphs` turns a genotype into plain :class:`CellGraph` data (no
Graphviz involved), and :func:`draw_genotype` renders any such description.
A genotype class of another space can provide its own description through a
``cell_graphs()`` method returning ``{cell_name: CellGraph}``.

Rendering needs the Graphviz ``dot`` binary, which is a system package, not a
Python one. When it is missing, :func:`draw_genotype` still writes the
``.gv`` sources and then raises :class:`DrawingUnavailable`, which a search
loop can catch and log without stopping.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from il_tf.spaces.genotypes import DARTS_SPACE, Genotype
from il_tf.spaces.nb201_genotype import NB201Genotype

__all__ = [
    "CellGraph",
    "DrawingUnavailable",
    "cell_graphs",
    "darts_cell_graph",
    "draw_genotype",
    "nb201_cell_graph",
]

_INSTALL_HINT = (
    "install the Graphviz system package: `sudo apt-get install graphviz` (Debian/Ubuntu), "
    "`brew install graphviz` (macOS) or `conda install graphviz` (conda)"
)


class DrawingUnavailable(RuntimeError):
    """Graphviz cannot render here (no ``dot`` binary, or it failed).

    ``sources`` lists the ``.gv`` files that were written anyway; they can be
    rendered later with ``dot -Tpng file.gv -o file.png``.
    """

    def __init__(self, message: str, sources: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.sources = list(sources)


@dataclass(frozen=True)
class CellGraph:
    """A drawable cell, independent of Graphviz.

    ``inputs``, ``nodes`` and ``outputs`` are ``(node_id, label)`` pairs: the
    cell's input states, its intermediate nodes and its output node(s), styled
    differently. ``edges`` are ``(src_id, dst_id, label)``; an empty label
    draws a plain arrow (e.g. into a concatenation).
    """

    inputs: tuple[tuple[str, str], ...]
    nodes: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]
    edges: tuple[tuple[str, str, str], ...]


def darts_cell_graph(cell_edges: Sequence[tuple[str, int]], concat: Sequence[int]) -> CellGraph:
    """The DARTS drawing of one cell: c_{k-2}, c_{k-1} -> nodes 0..steps-1 -> c_{k}."""
    steps = len(cell_edges) // 2
    # State index -> drawn node id: states 0/1 are the cell inputs, 2+i is node i.
    state_ids = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(steps)]
    edges = [(state_ids[j], str(k // 2), op) for k, (op, j) in enumerate(cell_edges)]
    edges += [(state_ids[c], "c_{k}", "") for c in concat]
    return CellGraph(
        inputs=tuple((s, s) for s in state_ids[:2]),
        nodes=tuple((s, s) for s in state_ids[2:]),
        outputs=(("c_{k}", "c_{k}"),),
        edges=tuple(edges),
    )


def nb201_cell_graph(edges: Sequence[tuple[int, int, str]]) -> CellGraph:
    """The NAS-Bench-201 drawing: input node 0, nodes 1, 2, output node 3; no `none` edges."""
    return CellGraph(
        inputs=(("0", "in"),),
        nodes=(("1", "1"), ("2", "2")),
        outputs=(("3", "out"),),
        edges=tuple((str(src), str(dst), op) for dst, src, op in edges if op != "none"),
    )


def cell_graphs(genotype: Any) -> dict[str, CellGraph]:
    """``{cell_name: CellGraph}`` of a genotype (``normal`` and ``reduce`` for DARTS)."""
    if isinstance(genotype, Genotype) or getattr(genotype, "space", None) == DARTS_SPACE:
        return {
            "normal": darts_cell_graph(genotype.normal, genotype.normal_concat),
            "reduce": darts_cell_graph(genotype.reduce, genotype.reduce_concat),
        }
    if isinstance(genotype, NB201Genotype):
        return {"cell": nb201_cell_graph(genotype.edges())}
    describe = getattr(genotype, "cell_graphs", None)
    if callable(describe):
        return dict(describe())
    raise TypeError(
        f"cannot draw a {type(genotype).__name__}: it is not a DARTS Genotype and has no "
        f"cell_graphs() method returning {{cell_name: CellGraph}}"
    )


def _import_graphviz() -> Any:
    # Imported on first use to keep `import il_tf.spaces.drawing` cheap.
    try:
        import graphviz
    except ImportError as err:
        raise DrawingUnavailable(
            "cannot draw cells: the `graphviz` Python package is missing; "
            f"`pip install graphviz`, and {_INSTALL_HINT} for the `dot` binary"
        ) from err
    return graphviz


def _to_digraph(graph: CellGraph, name: str) -> Any:
    graphviz = _import_graphviz()
    g = graphviz.Digraph(
        name,
        format="png",
        graph_attr={"rankdir": "LR", "fontname": "helvetica"},
        node_attr={
            "style": "filled",
            "shape": "rect",
            "align": "center",
            "fontsize": "20",
            "height": "0.5",
            "width": "0.5",
            "penwidth": "2",
            "fontname": "helvetica",
        },
        edge_attr={"fontsize": "20", "fontname": "helvetica"},
    )
    # Colors follow the DARTS paper's figures: inputs green, nodes blue, output yellow.
    for node_id, label in graph.inputs:
        g.node(node_id, label, fillcolor="darkseagreen2")
    for node_id, label in graph.nodes:
        g.node(node_id, label, fillcolor="lightblue")
    for node_id, label in graph.outputs:
        g.node(node_id, label, fillcolor="palegoldenrod")
    for src, dst, label in graph.edges:
        if label:
            g.edge(src, dst, label=label, fillcolor="gray")
        else:
            g.edge(src, dst, fillcolor="gray")
    return g


def draw_genotype(
    genotype: Any,
    out_dir: str | os.PathLike[str],
    basename: str = "genotype",
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Draws each cell of ``genotype`` to ``out_dir/{basename}_{cell}.{fmt}``.

    For a DARTS :class:`Genotype` the cells are ``normal`` and ``reduce``.
    The Graphviz source ``{basename}_{cell}.gv`` is always written first (it
    needs no binary). Returns the rendered image paths, cell by cell in
    ``formats`` order (empty when ``formats`` is empty).

    Raises :class:`DrawingUnavailable` (after writing the ``.gv`` sources) when
    the ``dot`` binary is missing or fails, with the install command.
    """
    graphviz = _import_graphviz()
    if isinstance(formats, str):
        formats = (formats,)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digraphs = {
        cell: _to_digraph(graph, f"{basename}_{cell}")
        for cell, graph in cell_graphs(genotype).items()
    }
    sources = []
    for cell, g in digraphs.items():
        path = out / f"{basename}_{cell}.gv"
        path.write_text(g.source, encoding="utf-8")
        sources.append(path)

    images = []
    for cell, g in digraphs.items():
        for fmt in formats:
            try:
                data = g.pipe(format=fmt)
            except graphviz.ExecutableNotFound as err:
                raise DrawingUnavailable(
                    f"cannot render cell drawings: the Graphviz `dot` binary is not on PATH; "
                    f"{_INSTALL_HINT}. The Graphviz sources were written to "
                    f"{', '.join(map(str, sources))}",
                    sources,
                ) from err
            except graphviz.CalledProcessError as err:
                stderr = (err.stderr or b"").decode(errors="replace").strip()
                raise DrawingUnavailable(
                    f"Graphviz `dot` failed to render {basename}_{cell}.{fmt}: {stderr}. "
                    f"The Graphviz sources were written to {', '.join(map(str, sources))}",
                    sources,
                ) from err
            path = out / f"{basename}_{cell}.{fmt}"
            path.write_bytes(data)
            images.append(path)
    return images
