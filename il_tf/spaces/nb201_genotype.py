"""The NAS-Bench-201 cell: operations, edge order, genotype and derivation from α.

Pure Python + numpy (no TensorFlow), so that benchmark tables, tools and tests
can use it without paying for a TensorFlow import.

A NAS-Bench-201 cell has 4 nodes (0 = cell input, 3 = cell output) and an edge
from every node to every later node, 6 edges in all. Each edge carries one of
the 5 operations in :data:`NB201_OPS`. The benchmark names a cell by its *arch
string*::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

The i-th ``+``-separated group (i = 1, 2, 3) lists the edges into node i, and
``op~j`` is the edge from node j. Reading the string left to right gives the
edge order used everywhere in il_tf (rows of α, :attr:`NB201Genotype.ops`)::

    edge index:   0      1      2      3      4      5
    (to, from):  (1,0)  (2,0)  (2,1)  (3,0)  (3,1)  (3,2)

This is also the order of the benchmark's own search code, which sorts the
edge names ``"1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "NB201_DERIVATIONS",
    "NB201_EDGES",
    "NB201_GENOTYPE_FORMAT",
    "NB201_NUM_EDGES",
    "NB201_NUM_NODES",
    "NB201_NUM_OPS",
    "NB201_OPS",
    "NB201_SPACE",
    "NB201Genotype",
    "NB201GenotypeError",
    "all_nb201_genotypes",
    "derive_nb201_genotype",
    "nb201_edge",
]

#: The candidate operations, in the column order of α (single source of truth).
NB201_OPS: tuple[str, ...] = (
    "none",
    "skip_connect",
    "nor_conv_1x1",
    "nor_conv_3x3",
    "avg_pool_3x3",
)
NB201_NUM_OPS = len(NB201_OPS)
#: Nodes of a cell: 0 is the cell input, 3 the cell output.
NB201_NUM_NODES = 4
#: (to_node, from_node) of each edge, in edge-index order (the arch-string order).
NB201_EDGES: tuple[tuple[int, int], ...] = tuple(
    (to, frm) for to in range(1, NB201_NUM_NODES) for frm in range(to)
)
NB201_NUM_EDGES = len(NB201_EDGES)  # 6
#: The ``space`` field of a serialized NAS-Bench-201 genotype.
NB201_SPACE = "nas-bench-201"
#: The ``format`` field of a serialized genotype (shared with the DARTS genotypes).
NB201_GENOTYPE_FORMAT = "il_tf.genotype/v1"

_ARCH_TEMPLATE = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
_ALLOWED_OPS = ", ".join(NB201_OPS)


class NB201GenotypeError(ValueError):
    """A malformed NAS-Bench-201 arch string, genotype, JSON record or α."""


def nb201_edge(edge_index: int) -> tuple[int, int]:
    """``(to_node, from_node)`` of edge ``edge_index`` (0..5), e.g. ``nb201_edge(2) == (2, 1)``."""
    if isinstance(edge_index, bool) or not isinstance(edge_index, (int, np.integer)):
        raise NB201GenotypeError(f"edge index must be an int in 0..5, got {edge_index!r}")
    if not 0 <= edge_index < NB201_NUM_EDGES:
        raise NB201GenotypeError(f"edge index {edge_index} out of range 0..{NB201_NUM_EDGES - 1}")
    return NB201_EDGES[int(edge_index)]


def _bad_arch(arch: str, detail: str) -> NB201GenotypeError:
    return NB201GenotypeError(
        f"invalid NAS-Bench-201 arch string {arch!r}: {detail} "
        f"(expected the form {_ARCH_TEMPLATE} with op one of: {_ALLOWED_OPS})"
    )


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """A NAS-Bench-201 cell: the operation on each of the 6 edges.

    ``ops[e]`` is the operation of edge ``e`` in the order of :data:`NB201_EDGES`
    (the arch-string order). Construct from an arch string with
    :meth:`from_arch_string`, from a saved record with :meth:`from_json_dict`,
    or from search logits with :func:`derive_nb201_genotype`.
    """

    ops: tuple[str, ...]

    space: ClassVar[str] = NB201_SPACE

    def __post_init__(self) -> None:
        ops = self.ops
        if isinstance(ops, str) or not isinstance(ops, Sequence):
            raise NB201GenotypeError(
                f"NB201Genotype.ops must be a sequence of {NB201_NUM_EDGES} op names, got {ops!r}"
            )
        ops = tuple(ops)
        if len(ops) != NB201_NUM_EDGES:
            raise NB201GenotypeError(
                f"NB201Genotype needs {NB201_NUM_EDGES} ops (one per edge), got {len(ops)}: {ops!r}"
            )
        for e, op in enumerate(ops):
            if op not in NB201_OPS:
                to, frm = NB201_EDGES[e]
                raise NB201GenotypeError(
                    f"unknown op {op!r} on edge {e} ({to}<-{frm}); allowed ops: {_ALLOWED_OPS}"
                )
        object.__setattr__(self, "ops", ops)

    # ------------------------------------------------------------------ arch strings
    def to_arch_string(self) -> str:
        """The benchmark's arch string, e.g. ``|nor_conv_3x3~0|+|...|+|...|``."""
        groups = []
        for to in range(1, NB201_NUM_NODES):
            tokens = [
                f"{op}~{frm}" for (t, frm), op in zip(NB201_EDGES, self.ops, strict=True) if t == to
            ]
            groups.append("|" + "|".join(tokens) + "|")
        return "+".join(groups)

    @classmethod
    def from_arch_string(cls, arch: str) -> NB201Genotype:
        """Parses an arch string strictly (no whitespace, exact group/edge layout)."""
        if not isinstance(arch, str):
            raise NB201GenotypeError(
                f"a NAS-Bench-201 arch string must be a str, got {type(arch).__name__}: {arch!r}"
            )
        groups = arch.split("+")
        if len(groups) != NB201_NUM_NODES - 1:
            raise _bad_arch(
                arch, f"found {len(groups)} '+'-separated groups, expected {NB201_NUM_NODES - 1}"
            )
        ops: list[str] = []
        for node, group in enumerate(groups, start=1):
            where = f"group {node} ({group!r}, the edges into node {node})"
            if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
                raise _bad_arch(arch, f"{where} must start and end with '|'")
            tokens = group[1:-1].split("|")
            if len(tokens) != node:
                raise _bad_arch(arch, f"{where} has {len(tokens)} edges, expected {node}")
            for frm, token in enumerate(tokens):
                op, sep, src = token.rpartition("~")
                if not sep:
                    raise _bad_arch(arch, f"token {token!r} in {where} is not of the form op~{frm}")
                if src != str(frm):
                    raise _bad_arch(
                        arch,
                        f"token {token!r} in {where} has input index ~{src}, expected ~{frm} "
                        f"(position {frm} of group {node} is the edge {node}<-{frm})",
                    )
                if op not in NB201_OPS:
                    raise _bad_arch(arch, f"token {token!r} in {where} has unknown op {op!r}")
                ops.append(op)
        return cls(tuple(ops))

    # ------------------------------------------------------------------ JSON records
    def to_json_dict(self) -> dict[str, str]:
        """``{"format": "il_tf.genotype/v1", "space": "nas-bench-201", "arch": ...}``."""
        return {
            "format": NB201_GENOTYPE_FORMAT,
            "space": NB201_SPACE,
            "arch": self.to_arch_string(),
        }

    @classmethod
    def from_json_dict(cls, record: Mapping[str, Any]) -> NB201Genotype:
        """Inverse of :meth:`to_json_dict`. Extra keys (metadata) are ignored."""
        if not isinstance(record, Mapping):
            raise NB201GenotypeError(
                f"a genotype record must be a JSON object (dict), got {type(record).__name__}"
            )
        for key in ("format", "space", "arch"):
            if key not in record:
                raise NB201GenotypeError(
                    f"genotype record is missing the {key!r} field; expected "
                    f'{{"format": "{NB201_GENOTYPE_FORMAT}", "space": "{NB201_SPACE}", '
                    f'"arch": "{_ARCH_TEMPLATE}"}}, got keys {sorted(record)}'
                )
        if record["format"] != NB201_GENOTYPE_FORMAT:
            raise NB201GenotypeError(
                f"unsupported genotype record format {record['format']!r}; "
                f"this version reads {NB201_GENOTYPE_FORMAT!r}"
            )
        if record["space"] != NB201_SPACE:
            raise NB201GenotypeError(
                f"genotype record is for search space {record['space']!r}, "
                f"not {NB201_SPACE!r}; load it with that space's genotype class"
            )
        return cls.from_arch_string(record["arch"])

    # ------------------------------------------------------------------ helpers
    def edges(self) -> tuple[tuple[int, int, str], ...]:
        """``((to_node, from_node, op), ...)`` in edge order."""
        return tuple((to, frm, op) for (to, frm), op in zip(NB201_EDGES, self.ops, strict=True))

    def op_indices(self) -> tuple[int, ...]:
        """Column of each edge's op in :data:`NB201_OPS`."""
        return tuple(NB201_OPS.index(op) for op in self.ops)

    def to_text(self) -> str:
        """One line for logs and TensorBoard: the arch string."""
        return self.to_arch_string()

    def __str__(self) -> str:
        return self.to_arch_string()


#: Derivation rules: ``argmax`` (the benchmark's, ``none`` a candidate) or
#: ``exclude_none`` (as the DARTS paper derives its cells: never ``none``).
NB201_DERIVATIONS = ("argmax", "exclude_none")


def derive_nb201_genotype(alpha: Any, derivation: str = "argmax") -> NB201Genotype:
    """The discrete cell of architecture logits ``alpha`` of shape (6, 5).

    Rows are the edges in :data:`NB201_EDGES` order, columns the ops in
    :data:`NB201_OPS` order. Each edge keeps its strongest op, the argmax of
    the softmax over its row (equal to the argmax of the logits). ``none`` *is*
    a candidate, as in the DARTS/GDAS/SETN derivation of the NAS-Bench-201
    benchmark's own search code, so a cell may come out with disconnected
    edges; this differs from the DARTS-space rule, which never keeps ``none``.
    Ties go to the earlier op in :data:`NB201_OPS` (so all-equal logits, e.g.
    a zero initialisation, give all ``none``).

    ``derivation="exclude_none"`` keeps each edge's strongest op other than
    ``none`` instead, so the cell is never disconnected (the DARTS paper's rule).

    ``alpha`` may be anything ``np.asarray`` accepts (a numpy array, nested
    lists, an eager TensorFlow tensor or a Keras variable).
    """
    if derivation not in NB201_DERIVATIONS:
        raise NB201GenotypeError(
            f"unknown derivation {derivation!r}; allowed: {list(NB201_DERIVATIONS)} "
            "(in gin: nb201_supernet.derivation = 'exclude_none')"
        )
    try:
        a = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise NB201GenotypeError(f"alpha must be a numeric array of shape (6, 5): {err}") from err
    if a.shape != (NB201_NUM_EDGES, NB201_NUM_OPS):
        raise NB201GenotypeError(
            f"alpha must have shape ({NB201_NUM_EDGES}, {NB201_NUM_OPS}) = "
            f"(edges {', '.join(f'{t}<-{f}' for t, f in NB201_EDGES)}; ops {_ALLOWED_OPS}), "
            f"got shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        bad = sorted({int(e) for e in np.argwhere(~np.isfinite(a))[:, 0]})
        raise NB201GenotypeError(f"alpha has non-finite values (NaN or inf) on edge(s) {bad}")
    if derivation == "exclude_none":
        a = a.copy()
        a[:, NB201_OPS.index("none")] = -np.inf
    return NB201Genotype(tuple(NB201_OPS[int(i)] for i in np.argmax(a, axis=1)))


def all_nb201_genotypes() -> Iterator[NB201Genotype]:
    """All 5^6 = 15,625 cells (isomorphic ones included).

    The order is lexicographic in (edge 0, ..., edge 5) with ops ranked as in
    :data:`NB201_OPS`; it is *not* the benchmark's arch index (see
    ``il_tf.nb201_lookup`` for that).
    """
    for ops in itertools.product(NB201_OPS, repeat=NB201_NUM_EDGES):
        yield NB201Genotype(ops)
