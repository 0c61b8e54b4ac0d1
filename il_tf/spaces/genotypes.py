"""DARTS-space cell genotypes: the data type, JSON files, derivation from α, published cells.

Pure Python + numpy (no TensorFlow), so that tools and tests can read, write
and derive genotypes without paying for a TensorFlow import.

A DARTS cell has two input states (0 = output of the cell two back, c_{k-2};
1 = output of the previous cell, c_{k-1}) and ``steps`` intermediate nodes
(states 2 .. steps+1). In the *supernet* every intermediate node ``i`` (0-based)
has a mixed edge from every earlier state ``j < i + 2``; the edges are numbered
node by node (node 0's 2 edges, node 1's 3 edges, ...), which is the row order
of α everywhere in il_tf (see :func:`edge_index`)::

    edge index:   0      1      2      3      4      5      6    ...   13
    (node, in):  (0,0)  (0,1)  (1,0)  (1,1)  (1,2)  (2,0)  (2,1)  ... (3,4)

A *genotype* keeps 2 edges per node, each with one operation: ``normal[2*i]``
and ``normal[2*i + 1]`` are the ``(op, input)`` pairs of node ``i``. The cell
output concatenates the states listed in ``normal_concat`` (default 2..5).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from il_tf import rundir

__all__ = [
    "DARTS",
    "DARTS_OPS",
    "DARTS_SPACE",
    "DARTS_V1",
    "DARTS_V2",
    "GENOTYPE_FORMAT",
    "GENOTYPE_OPS",
    "Genotype",
    "GenotypeError",
    "PC_DARTS",
    "PUBLISHED",
    "P_DARTS",
    "derive_genotype",
    "edge_index",
    "edges",
    "genotype_from_json_dict",
    "get_published",
    "load_genotype",
    "load_genotype_with_metadata",
    "num_edges",
    "save_genotype",
    "softmax_alphas",
]

#: The candidate operations, in the column order of α (single source of truth).
DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: Operations allowed in a derived cell: ``none`` means "no edge", so it is never kept.
GENOTYPE_OPS: tuple[str, ...] = tuple(op for op in DARTS_OPS if op != "none")
#: The ``space`` field of a serialized DARTS genotype.
DARTS_SPACE = "darts"
#: The ``format`` field of every serialized genotype (shared with NAS-Bench-201).
GENOTYPE_FORMAT = "il_tf.genotype/v1"
_NB201_SPACE = "nas-bench-201"
# A searched Keras model's choices (il_tf/spaces/choice_genotype.py).
_CHOICES_SPACE = "choices"
_KNOWN_SPACES = (DARTS_SPACE, _NB201_SPACE, _CHOICES_SPACE)
_CELLS = ("normal", "reduce")

Edge = tuple[str, int]


class GenotypeError(ValueError):
    """A malformed genotype, genotype file or α, or an unknown genotype name."""


# ---------------------------------------------------------------------- edge order
def num_edges(steps: int) -> int:
    """Mixed edges of a supernet cell with ``steps`` intermediate nodes (14 for 4)."""
    # Node i has i + 2 inputs: sum_{i<steps} (i + 2).
    return steps * (steps + 3) // 2


def edge_index(node: int, input: int) -> int:
    """Row of α for the edge from state ``input`` into intermediate node ``node`` (0-based).

    ``input`` 0 and 1 are the two cell inputs, ``input`` 2 + k is intermediate
    node k; it must satisfy ``0 <= input < node + 2``.
    """
    if node < 0 or not 0 <= input < node + 2:
        raise GenotypeError(
            f"no edge from state {input} into intermediate node {node}: "
            f"need node >= 0 and 0 <= input < node + 2"
        )
    return num_edges(node) + input


def edges(steps: int) -> tuple[tuple[int, int], ...]:
    """``((node, input), ...)`` of every mixed edge, in α row order."""
    return tuple((i, j) for i in range(steps) for j in range(i + 2))


# ---------------------------------------------------------------------- genotype
def _is_int(x: Any) -> bool:
    # bool is an int subclass, but True as a node index is always a mistake.
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _coerce_edges(name: str, value: Any) -> tuple[Edge, ...]:
    """``value`` as a tuple of ``(op, input)`` pairs; type errors name the entry."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise GenotypeError(
            f"genotype '{name}' must be a sequence of (op, input) pairs, got {value!r}"
        )
    out = []
    for k, entry in enumerate(value):
        if (
            isinstance(entry, (str, bytes))
            or not isinstance(entry, Sequence)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not _is_int(entry[1])
        ):
            raise GenotypeError(
                f"genotype {name}[{k}] must be an (op, input) pair with op a string "
                f"and input an integer, got {entry!r}"
            )
        out.append((entry[0], int(entry[1])))
    return tuple(out)


def _coerce_concat(name: str, value: Any) -> tuple[int, ...]:
    # range(2, 6) is what DARTS-family code writes, so any sequence of ints is accepted.
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise GenotypeError(f"genotype '{name}' must be a sequence of ints, got {value!r}")
    for k, c in enumerate(value):
        if not _is_int(c):
            raise GenotypeError(f"genotype {name}[{k}] must be an integer, got {c!r}")
    return tuple(int(c) for c in value)


def check_record_format(d: Any, error: type[Exception]) -> None:
    """Raises ``error`` unless ``d`` is a JSON object whose ``format`` (if given) is
    this version's genotype format."""
    if not isinstance(d, Mapping):
        raise error(f"a genotype record must be a JSON object (dict), got {type(d).__name__}")
    fmt = d.get("format", GENOTYPE_FORMAT)
    if fmt != GENOTYPE_FORMAT:
        raise error(f"unsupported genotype format {fmt!r}; this version reads {GENOTYPE_FORMAT!r}")


@dataclass(frozen=True)
class Genotype:
    """A discrete DARTS cell pair (normal and reduction cell), validated on construction.

    ``normal[2*i]`` and ``normal[2*i + 1]`` are the ``(op, input)`` edges of
    intermediate node ``i``: ``op`` is one of :data:`GENOTYPE_OPS`, ``input`` a
    state index ``0 <= input < i + 2``, and the two inputs of a node differ.
    ``normal_concat`` lists the intermediate states (2 .. steps+1) whose
    concatenation is the cell output. ``reduce`` / ``reduce_concat`` likewise.
    ``steps`` is ``len(normal) // 2`` (both cells must have the same number).

    Lists and ``range`` objects are accepted and stored as tuples, so the
    genotypes printed by the DARTS family's own code can be pasted in.
    """

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    space: ClassVar[str] = DARTS_SPACE

    def __post_init__(self) -> None:
        for cell in _CELLS:
            object.__setattr__(self, cell, _coerce_edges(cell, getattr(self, cell)))
            concat = f"{cell}_concat"
            object.__setattr__(self, concat, _coerce_concat(concat, getattr(self, concat)))
        self.validate()

    @property
    def steps(self) -> int:
        """Number of intermediate nodes per cell."""
        return len(self.normal) // 2

    def validate(self) -> None:
        """Raises :class:`GenotypeError` naming the first bad entry, if any."""
        for cell in _CELLS:
            cell_edges: tuple[Edge, ...] = getattr(self, cell)
            if len(cell_edges) < 2 or len(cell_edges) % 2:
                raise GenotypeError(
                    f"genotype '{cell}' has {len(cell_edges)} edges; a cell needs exactly 2 "
                    f"edges per intermediate node (an even count >= 2)"
                )
        if len(self.normal) != len(self.reduce):
            raise GenotypeError(
                f"genotype 'normal' has {len(self.normal)} edges but 'reduce' has "
                f"{len(self.reduce)}; both cells must have the same number of nodes"
            )
        steps = self.steps
        for cell in _CELLS:
            cell_edges = getattr(self, cell)
            for k, (op, j) in enumerate(cell_edges):
                node = k // 2
                where = f"genotype {cell}[{k}] = ({op!r}, {j})"
                if op == "none":
                    raise GenotypeError(
                        f"{where}: 'none' is not allowed in a genotype (it means no edge); "
                        f"allowed ops: {', '.join(GENOTYPE_OPS)}"
                    )
                if op not in GENOTYPE_OPS:
                    raise GenotypeError(
                        f"{where}: unknown op {op!r}; allowed ops: {', '.join(GENOTYPE_OPS)}"
                    )
                if not 0 <= j < node + 2:
                    raise GenotypeError(
                        f"{where}: bad node index {j} for intermediate node {node} "
                        f"(state {node + 2}); its inputs must satisfy 0 <= input < {node + 2}"
                    )
            for node in range(steps):
                (_, a), (_, b) = cell_edges[2 * node : 2 * node + 2]
                if a == b:
                    raise GenotypeError(
                        f"genotype {cell}[{2 * node}] and {cell}[{2 * node + 1}] both take "
                        f"input {a} into intermediate node {node}; a node's two edges must "
                        f"come from distinct predecessors"
                    )
            concat_name = f"{cell}_concat"
            concat: tuple[int, ...] = getattr(self, concat_name)
            if not concat:
                raise GenotypeError(f"genotype '{concat_name}' is empty")
            for k, c in enumerate(concat):
                if not 2 <= c < steps + 2:
                    raise GenotypeError(
                        f"genotype {concat_name}[{k}] = {c} is out of range; concat entries "
                        f"are intermediate states 2..{steps + 1} for a {steps}-node cell"
                    )
            if len(set(concat)) != len(concat):
                raise GenotypeError(f"genotype '{concat_name}' repeats a state: {list(concat)}")

    def to_text(self) -> str:
        """One line for logs and TensorBoard: the JSON record."""
        return json.dumps(self.to_json_dict())

    # ------------------------------------------------------------------ JSON
    def to_json_dict(self) -> dict[str, Any]:
        """The ``il_tf.genotype/v1`` record (plain lists, JSON-ready)."""
        return {
            "format": GENOTYPE_FORMAT,
            "space": DARTS_SPACE,
            "normal": [[op, j] for op, j in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, j] for op, j in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> Genotype:
        """Inverse of :meth:`to_json_dict`; checks every field's type. Extra keys are ignored.

        ``format`` and ``space`` may be omitted (hand-written files); when present
        they must be ``il_tf.genotype/v1`` and ``darts``.
        """
        check_record_format(d, GenotypeError)
        space = d.get("space", DARTS_SPACE)
        if space != DARTS_SPACE:
            raise GenotypeError(
                f"genotype record is for search space {space!r}, not {DARTS_SPACE!r}; "
                f"use load_genotype / genotype_from_json_dict to dispatch on the space"
            )
        fields: dict[str, Any] = {}
        for cell in _CELLS:
            fields[cell] = _edges_from_json(cell, d)
            fields[f"{cell}_concat"] = _concat_from_json(f"{cell}_concat", d)
        return cls(**fields)

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_json_dict` as a JSON string."""
        return json.dumps(self.to_json_dict(), indent=indent)

    @classmethod
    def from_json(cls, s: str) -> Genotype:
        """Parses a JSON string written by :meth:`to_json`."""
        return cls.from_json_dict(_parse_json(s, "genotype JSON string"))


def _field(d: Mapping[str, Any], name: str) -> Any:
    if name not in d:
        raise GenotypeError(f"genotype field {name!r} is missing (got keys {sorted(d)})")
    return d[name]


def _edges_from_json(name: str, d: Mapping[str, Any]) -> list[Edge]:
    value = _field(d, name)
    if not isinstance(value, list):
        raise GenotypeError(
            f"genotype field {name!r} must be a list of [op, input] pairs, got {value!r}"
        )
    out = []
    for k, entry in enumerate(value):
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not _is_int(entry[1])
        ):
            raise GenotypeError(
                f"genotype field {name!r}[{k}] must be [op, input] with op a string and "
                f"input an integer, got {entry!r}"
            )
        out.append((entry[0], entry[1]))
    return out


def _concat_from_json(name: str, d: Mapping[str, Any]) -> list[int]:
    value = _field(d, name)
    if not isinstance(value, list) or not all(_is_int(c) for c in value):
        raise GenotypeError(f"genotype field {name!r} must be a list of integers, got {value!r}")
    return value


# ---------------------------------------------------------------------- files
def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise GenotypeError(
            f"{where}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None


def genotype_from_json_dict(d: Mapping[str, Any]) -> Any:
    """A genotype of the space named by ``d["space"]`` (``darts`` when absent).

    ``darts`` gives a :class:`Genotype`; ``nas-bench-201`` an
    ``il_tf.spaces.nb201_genotype.NB201Genotype``; ``choices`` an
    ``il_tf.spaces.choice_genotype.ChoiceGenotype``.
    """
    if not isinstance(d, Mapping):
        raise GenotypeError(
            f"a genotype record must be a JSON object (dict), got {type(d).__name__}"
        )
    space = d.get("space", DARTS_SPACE)
    if space == DARTS_SPACE:
        return Genotype.from_json_dict(d)
    if space == _NB201_SPACE:
        # Imported lazily: most callers only ever see one space.
        from il_tf.spaces.nb201_genotype import NB201Genotype

        try:
            return NB201Genotype.from_json_dict(d)
        except ValueError as err:  # NB201GenotypeError: give callers one error type to catch
            raise GenotypeError(str(err)) from err
    if space == _CHOICES_SPACE:
        from il_tf.spaces.choice_genotype import ChoiceGenotype

        try:
            return ChoiceGenotype.from_json_dict(d)
        except ValueError as err:
            raise GenotypeError(str(err)) from err
    raise GenotypeError(
        f"unknown genotype space {space!r}; known spaces: {', '.join(_KNOWN_SPACES)}"
    )


def _json_default(obj: Any) -> Any:
    # Metadata often holds numpy scalars/arrays (accuracies, α) or paths.
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(
        f"genotype metadata value of type {type(obj).__name__} is not JSON-serializable"
    )


def save_genotype(
    path: str | os.PathLike[str],
    genotype: Any,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``{"genotype": genotype.to_json_dict(), **metadata}`` to ``path`` atomically.

    Through ``il_tf.rundir.write_text``: a crash leaves either the old file or the new
    one, never half of one, and the file's mode follows the umask. ``genotype`` is any
    genotype with ``to_json_dict()`` (DARTS or NAS-Bench-201). Parent directories are
    created. Returns the path written; ``rundir.RunDirError`` when it cannot be written.
    """
    path = Path(path)
    metadata = dict(metadata or {})
    if "genotype" in metadata:
        raise GenotypeError("metadata may not contain the key 'genotype' (it holds the cell)")
    record = {"genotype": genotype.to_json_dict(), **metadata}
    # Serialize first, so an unserializable value fails before anything touches the disk.
    text = rundir.json_text(record, default=_json_default)
    return rundir.write_text(path, text)


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.lower().endswith(".json")


def load_genotype_with_metadata(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """``(genotype, metadata)`` from a file written by :func:`save_genotype`.

    A bare genotype record (no ``"genotype"`` wrapper) gives empty metadata.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GenotypeError(f"genotype file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GenotypeError(f"cannot read genotype file {path}: {err}") from None
    data = _parse_json(text, f"genotype file {path}")
    if not isinstance(data, dict):
        raise GenotypeError(
            f"genotype file {path}: expected a JSON object, got {type(data).__name__}"
        )
    if "genotype" in data:
        record, metadata = data["genotype"], {k: v for k, v in data.items() if k != "genotype"}
    else:
        record, metadata = data, {}
    try:
        return genotype_from_json_dict(record), metadata
    except GenotypeError as err:
        raise GenotypeError(f"genotype file {path}: {err}") from None


def load_genotype(path_or_name: str | os.PathLike[str]) -> Any:
    """A genotype from a file (see :func:`save_genotype`) or a published name.

    An existing file wins over a published name of the same spelling. Names
    are matched case-insensitively (see :data:`PUBLISHED`). The file's
    ``space`` picks the class: :class:`Genotype` for ``darts``,
    ``NB201Genotype`` for ``nas-bench-201``.
    """
    s = os.fspath(path_or_name)
    if Path(s).is_file():
        return load_genotype_with_metadata(s)[0]
    if isinstance(path_or_name, os.PathLike) or _looks_like_path(s):
        raise GenotypeError(f"genotype file not found: {s}")
    try:
        return get_published(s)
    except GenotypeError:
        raise GenotypeError(
            f"unknown genotype {s!r}: not an existing file and not a published name; "
            f"published names: {', '.join(PUBLISHED)}"
        ) from None


# ---------------------------------------------------------------------- derivation
def softmax_alphas(alpha: Any) -> np.ndarray:
    """Softmax over the last axis (the ops of each edge), numerically stable, float64."""
    a = np.asarray(alpha, dtype=np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _edge_op_lists(
    ops: Sequence[str] | Sequence[Sequence[str]], steps: int
) -> list[tuple[str, ...]]:
    """One op tuple per edge from either a shared op list or a per-edge list."""
    n = num_edges(steps)
    if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) == 0:
        raise GenotypeError(f"ops must be a non-empty sequence of op names, got {ops!r}")
    shared = all(isinstance(op, str) for op in ops)
    if shared:
        per_edge = [tuple(ops)] * n
    elif all(isinstance(o, Sequence) and not isinstance(o, str) for o in ops):
        if len(ops) != n:
            raise GenotypeError(
                f"per-edge ops has {len(ops)} entries; expected {n} (one per edge for steps={steps})"
            )
        per_edge = [tuple(o) for o in ops]
    else:
        raise GenotypeError(
            "ops must be either a sequence of op names (shared by all edges) or a sequence "
            f"of op-name sequences (one per edge), got {ops!r}"
        )
    for e, edge_ops in enumerate(per_edge):
        where = "ops" if shared else f"ops[{e}]"
        if not edge_ops:
            raise GenotypeError(f"{where} is empty; every edge needs at least one op")
        for op in edge_ops:
            if not isinstance(op, str) or op not in DARTS_OPS:
                raise GenotypeError(
                    f"{where} has unknown op {op!r}; known ops: {', '.join(DARTS_OPS)}"
                )
        if len(set(edge_ops)) != len(edge_ops):
            raise GenotypeError(f"{where} repeats an op: {list(edge_ops)}")
    return per_edge


def _edge_weights(
    alpha: Any,
    edge_ops: list[tuple[str, ...]],
    beta: Any,
    steps: int,
    name: str,
    beta_name: str,
) -> list[np.ndarray]:
    """Per-edge op weights: softmax(α row), times the node's softmax(β) weight if given."""
    n = num_edges(steps)
    try:
        a = np.asarray(alpha, dtype=np.float64)
        rows = list(a) if a.ndim == 2 else None
    except (TypeError, ValueError):  # ragged: one row per edge with per-edge op counts
        rows = None
    if rows is None:
        if isinstance(alpha, (str, bytes)) or not isinstance(alpha, Sequence):
            raise GenotypeError(
                f"{name} must be a 2-D array of shape ({n}, num_ops) or a sequence of {n} "
                f"rows, got {type(alpha).__name__} of shape {np.shape(alpha)}"
            )
        try:
            rows = [np.asarray(r, dtype=np.float64) for r in alpha]
        except (TypeError, ValueError) as err:
            raise GenotypeError(f"{name} rows must be numeric: {err}") from None
    if len(rows) != n:
        raise GenotypeError(
            f"{name} has {len(rows)} rows; expected {n} (one per edge of a {steps}-node cell)"
        )
    weights = []
    for e, (row, ops) in enumerate(zip(rows, edge_ops, strict=True)):
        node, inp = edges(steps)[e]
        if row.shape != (len(ops),):
            raise GenotypeError(
                f"{name} row {e} (edge {inp} -> node {node}) has shape {row.shape}; "
                f"expected ({len(ops)},), one column per op: {', '.join(ops)}"
            )
        if not np.all(np.isfinite(row)):
            raise GenotypeError(
                f"{name} row {e} (edge {inp} -> node {node}) has non-finite values: {row}"
            )
        weights.append(softmax_alphas(row))
    if beta is not None:
        b = np.asarray(beta, dtype=np.float64)
        if b.shape != (n,):
            raise GenotypeError(
                f"{beta_name} must have shape ({n},), one logit per edge, got {b.shape}"
            )
        if not np.all(np.isfinite(b)):
            raise GenotypeError(f"{beta_name} has non-finite values: {b}")
        for node in range(steps):
            lo = num_edges(node)
            node_w = softmax_alphas(b[lo : lo + node + 2])
            for j in range(node + 2):
                weights[lo + j] = weights[lo + j] * node_w[j]
    return weights


def _derive_cell(
    weights: list[np.ndarray],
    edge_ops: list[tuple[str, ...]],
    excluded: set[tuple[int, str]],
    steps: int,
    cell: str,
) -> list[Edge]:
    """The DARTS rule for one cell (see :func:`derive_genotype`)."""
    gene: list[Edge] = []
    for node in range(steps):
        candidates = []  # (strength, input, op) of each edge that has a keepable op
        for j in range(node + 2):
            e = edge_index(node, j)
            best = None
            for k, op in enumerate(edge_ops[e]):
                if op == "none" or (e, op) in excluded:
                    continue
                # Strict '>' keeps the first of equal weights, as DARTS does.
                if best is None or weights[e][k] > weights[e][best]:
                    best = k
            if best is not None:
                candidates.append((weights[e][best], j, edge_ops[e][best]))
        if len(candidates) < 2:
            raise GenotypeError(
                f"cannot derive the {cell} cell: intermediate node {node} has "
                f"{len(candidates)} incoming edge(s) with an op other than 'none'; need 2"
            )
        # One candidate per input, so the top two are from distinct predecessors;
        # the sort is stable, so equal strengths keep the lower input first (as DARTS).
        candidates.sort(key=lambda c: -c[0])
        gene += [(op, j) for _, j, op in candidates[:2]]
    return gene


def derive_genotype(
    alpha_normal: Any,
    alpha_reduce: Any,
    *,
    ops: Sequence[str] | Sequence[Sequence[str]] = DARTS_OPS,
    reduce_ops: Sequence[str] | Sequence[Sequence[str]] | None = None,
    steps: int = 4,
    multiplier: int = 4,
    beta_normal: Any = None,
    beta_reduce: Any = None,
    max_skip_normal: int | None = None,
) -> Genotype:
    """The discrete cells of architecture logits, by the DARTS rule.

    Shapes: ``alpha_*`` has one row per edge in :func:`edges` order
    (``num_edges(steps)`` rows, 14 for 4 steps) and one column per op of
    ``ops``. ``ops`` is either one op list shared by all edges (default
    :data:`DARTS_OPS`) or a per-edge list of op lists (P-DARTS prunes each
    edge's op set), in which case row ``e`` has ``len(ops[e])`` columns and
    ``alpha_*`` may be a ragged sequence of rows. Anything ``np.asarray``
    accepts works (numpy, nested lists, eager tensors, Keras variables).
    ``reduce_ops`` (same forms; None = ``ops``) gives the reduction cell its own
    op lists when the two cells' differ (P-DARTS prunes each cell on its own).

    Rule, per cell:

    1. ``w[e] = softmax(alpha[e])`` over edge ``e``'s ops (``none`` included).
    2. PC-DARTS edge normalization, if ``beta_*`` (shape ``(num_edges,)``, one
       logit per edge, same order) is given: for each node ``i`` with edges
       ``E_i`` (its ``i + 2`` incoming edges), ``w[e] *= softmax(beta[E_i])[e]``.
    3. For each node, each incoming edge's strength is its largest weight over
       ops other than ``none`` and its op is that argmax; ``none`` is never kept,
       even when it is the largest weight. The 2 strongest edges are kept
       (one edge per predecessor, so they come from distinct predecessors),
       strongest first. Ties go to the lower input / earlier op, as in DARTS.
    4. ``concat = range(2, 2 + steps)[-multiplier:]``.

    ``max_skip_normal`` (P-DARTS; None = no cap): while the normal cell keeps
    more than that many ``skip_connect`` edges, the kept ``skip_connect`` with
    the smallest weight is excluded on its edge (P-DARTS sets its weight to 0)
    and the normal cell is derived again; a skip whose exclusion would leave its
    node fewer than two edges with an op (pruned per-edge op lists can do that) is
    kept, so the cap can then be exceeded. The reduction cell is not capped.
    """
    if not _is_int(steps) or steps < 1:
        raise GenotypeError(f"steps must be a positive integer, got {steps!r}")
    if not _is_int(multiplier) or not 1 <= multiplier <= steps:
        raise GenotypeError(
            f"multiplier must be an integer in 1..steps={steps}, got {multiplier!r}"
        )
    if max_skip_normal is not None and (not _is_int(max_skip_normal) or max_skip_normal < 0):
        raise GenotypeError(
            f"max_skip_normal must be None or a non-negative integer, got {max_skip_normal!r}"
        )
    edge_ops = _edge_op_lists(ops, steps)
    reduce_edge_ops = edge_ops if reduce_ops is None else _edge_op_lists(reduce_ops, steps)
    w_normal = _edge_weights(
        alpha_normal, edge_ops, beta_normal, steps, "alpha_normal", "beta_normal"
    )
    w_reduce = _edge_weights(
        alpha_reduce, reduce_edge_ops, beta_reduce, steps, "alpha_reduce", "beta_reduce"
    )

    excluded: set[tuple[int, str]] = set()
    normal = _derive_cell(w_normal, edge_ops, excluded, steps, "normal")
    if max_skip_normal is not None:
        # Skips whose exclusion would leave their node fewer than two edges to keep.
        needed: set[int] = set()
        while True:
            kept_skips = [
                edge_index(k // 2, j) for k, (op, j) in enumerate(normal) if op == "skip_connect"
            ]
            removable = [e for e in kept_skips if e not in needed]
            if len(kept_skips) <= max_skip_normal or not removable:
                break
            # Each pass excludes one more (edge, op) pair or marks one edge as
            # needed, so the loop ends.
            weakest = min(removable, key=lambda e: w_normal[e][edge_ops[e].index("skip_connect")])
            try:
                normal = _derive_cell(
                    w_normal, edge_ops, excluded | {(weakest, "skip_connect")}, steps, "normal"
                )
            except GenotypeError:
                needed.add(weakest)
                continue
            excluded.add((weakest, "skip_connect"))
    reduce = _derive_cell(w_reduce, reduce_edge_ops, set(), steps, "reduce")
    concat = tuple(range(2, 2 + steps)[-multiplier:])
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)


# ---------------------------------------------------------------------- published cells
# Copied by value from the authors' public code (quark0/darts cnn/genotypes.py,
# yuhuixu1993/PC-DARTS genotypes.py, chenxin061/pdarts genotypes.py).
DARTS_V1 = Genotype(
    normal=[
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("avg_pool_3x3", 0),
    ],
    reduce_concat=[2, 3, 4, 5],
)  # fmt: skip
DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("skip_connect", 0), ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)  # fmt: skip
#: PC-DARTS, CIFAR-10 search (``PC_DARTS_cifar``).
PC_DARTS = Genotype(
    normal=[
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0), ("dil_conv_3x3", 1),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("sep_conv_5x5", 1), ("max_pool_3x3", 0),
        ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
    ],
    reduce_concat=range(2, 6),
)  # fmt: skip
P_DARTS = Genotype(
    normal=[
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 4),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
        ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
        ("dil_conv_3x3", 1), ("dil_conv_5x5", 3),
    ],
    reduce_concat=range(2, 6),
)  # fmt: skip
#: DARTS (2nd order), the cell of the DARTS paper's CIFAR-10 results.
DARTS = DARTS_V2

#: Published cells by name (look up with :func:`get_published`, case-insensitive).
PUBLISHED: dict[str, Genotype] = {
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "PC_DARTS": PC_DARTS,
    "P_DARTS": P_DARTS,
}
_ALIASES = {"DARTS": "DARTS_V2"}


def get_published(name: str) -> Genotype:
    """The published cell ``name`` (case-insensitive; ``DARTS`` means ``DARTS_V2``)."""
    key = str(name).strip().upper().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in PUBLISHED:
        raise GenotypeError(
            f"unknown published genotype {name!r}; published names: {', '.join(PUBLISHED)} "
            f"(case-insensitive; 'DARTS' is an alias of 'DARTS_V2')"
        )
    return PUBLISHED[key]
