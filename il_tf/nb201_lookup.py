"""NAS-Bench-201 look-up table: the trained accuracy of every cell, offline.

Pure Python + numpy (no TensorFlow). Typical use::

    from il_tf.nb201_lookup import NB201Table
    table = NB201Table.load("../shared/data/nasbench201.json.gz")
    result = table.lookup(genotype)          # an NB201Genotype or an arch string
    print(result.cifar10_test, result.cifar100_test, result.imagenet16_test)

Table file format
-----------------
One JSON object, either gzip-compressed (detected from the content, not the
file name) or plain, mapping each cell's arch string to a record::

    {
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": {
        "index": 9930,
        "cifar10_valid": 91.5533, "cifar10_test": 94.3633,
        "cifar100_valid": 73.4933, "cifar100_test": 73.5133,
        "imagenet16_valid": 46.3667, "imagenet16_test": 46.3444,
        "params_m": 1.288506, "flops_m": 184.73025,
        "iso_rep": 9930, "nats_cifar10_test": 94.3633, ...
      },
      ...
    }

*Keys* are arch strings ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` in exactly
the benchmark's spelling (ops ``none``, ``skip_connect``, ``nor_conv_1x1``,
``nor_conv_3x3``, ``avg_pool_3x3``; no spaces). Isomorphic cells are separate
keys. A table may hold any subset of the 15,625 cells.

*Required* fields of every record (numbers, accuracy in %, mean over the
benchmark's seeds, final epoch of the 200-epoch training):

==================== =====================================================
``cifar10_valid``    NB201 ``cifar10-valid`` setting: trained on 25k CIFAR-10
                     train images, accuracy on the other 25k (``x-valid``)
``cifar10_test``     NB201 ``cifar10`` setting: trained on 50k, accuracy on
                     the 10k test set (``ori-test``); papers' "CIFAR-10 test"
``cifar100_valid``   trained on 50k; the ``x-valid`` half of the test set
``cifar100_test``    trained on 50k; the ``x-test`` half of the test set
``imagenet16_valid`` ImageNet16-120, ``x-valid`` half of its test set
``imagenet16_test``  ImageNet16-120, ``x-test`` half of its test set
==================== =====================================================

*Optional* fields:

- ``index`` (int): the benchmark's arch index 0..15624 (``api.arch(i)``);
  ``None`` in the result when absent. Must be unique within a table.
- ``params_m``, ``flops_m`` (numbers): parameters and FLOPs, in millions, of
  the CIFAR-10 network; when absent they are computed exactly from the cell
  by :func:`nb201_cost` (the benchmark's own convention).
- ``iso_rep`` (int): smallest arch index of the cell's isomorphism class.
- anything else (e.g. ``nats_cifar10_test``): kept as is in
  :attr:`NB201Result.extra`; numeric ones can be used with :meth:`NB201Table.best`.

To bring your own export of the official benchmark, write
``{api.arch(i): {"index": i, "cifar10_valid": ..., ...} for i in range(len(api))}``
and ``json.dump`` it (gzip optional), with the accuracies averaged over seeds
at the last epoch of the 200-epoch schedule (NATS-Bench tss:
``api.get_more_info(i, dataset, hp="200", is_random=False)``; the NB201 v1 API
takes ``use_12epochs_result=False`` instead of ``hp``): ``cifar10_valid`` is
``valid-accuracy`` of ``"cifar10-valid"``, ``cifar10_test`` is
``test-accuracy`` of ``"cifar10"``, and ``cifar100_*`` / ``imagenet16_*`` are
``valid-accuracy`` / ``test-accuracy`` of ``"cifar100"`` / ``"ImageNet16-120"``.
The copy this project uses, and how it was checked against published
numbers, is described in ``shared/data/NASBENCH201.md``.

:data:`PUBLISHED_NB201` holds the published results of other search methods
on this benchmark, to print beside ours.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import itertools
import json
import math
import os
import types
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from il_tf.spaces.nb201_genotype import (
    NB201_NUM_EDGES,
    NB201_OPS,
    NB201Genotype,
    NB201GenotypeError,
)

__all__ = [
    "NB201_ACCURACY_FIELDS",
    "NB201_DATASETS",
    "NB201_NUM_CELLS",
    "NB201_TABLE_FILENAME",
    "PUBLISHED_NB201",
    "NB201ArchNotFoundError",
    "NB201Reporter",
    "NB201Result",
    "NB201Table",
    "NB201TableError",
    "PublishedNB201Result",
    "nb201_cost",
]

#: Number of cells in the space (5 ops ** 6 edges).
NB201_NUM_CELLS = len(NB201_OPS) ** NB201_NUM_EDGES
#: File name of the table in the shared data folder.
NB201_TABLE_FILENAME = "nasbench201.json.gz"
#: Field-name prefixes of the benchmark's three data sets.
NB201_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet16")
#: The required accuracy fields of every table record (in %).
NB201_ACCURACY_FIELDS: tuple[str, ...] = tuple(
    f"{ds}_{split}" for ds in NB201_DATASETS for split in ("valid", "test")
)
_COST_FIELDS = ("params_m", "flops_m")
_INT_FIELDS = ("index", "iso_rep")
_KNOWN_FIELDS = frozenset(NB201_ACCURACY_FIELDS + _COST_FIELDS + _INT_FIELDS)
_FAST_FIELDS = NB201_ACCURACY_FIELDS + _COST_FIELDS  # NB201Result's positional order


class NB201TableError(ValueError):
    """The table file is missing, unreadable or not in the documented format."""


class NB201ArchNotFoundError(KeyError):
    """A well-formed arch that the loaded table does not contain."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------- cost model
# params_M = P0 + 0.24304 * n3 + 0.028 * n1 and FLOPs_M = F0 + a3 * n3 + a1 * n1,
# n3 / n1 = number of nor_conv_3x3 / nor_conv_1x1 edges; none, skip and pooling
# cost nothing (the benchmark does not count pooling FLOPs). Network: stem conv
# 3->16 + BN, 3 stages of 5 cells (C = 16/32/64), residual reduction blocks, FC.
_COST = {
    #             P0        p3       p1      F0        a3        a1
    "cifar10": (0.073306, 0.24304, 0.028, 7.78305, 35.38944, 3.93216),
    "cifar100": (0.079156, 0.24304, 0.028, 7.7889, 35.38944, 3.93216),
    "imagenet16": (0.080456, 0.24304, 0.028, 1.9534, 8.84736, 0.98304),
}


def nb201_cost(genotype: NB201Genotype | str, dataset: str = "cifar10") -> tuple[float, float]:
    """``(params_m, flops_m)`` of the benchmark network built from ``genotype``.

    Exact, in millions, for ``dataset`` in ``"cifar10"`` (32x32, 10 classes),
    ``"cifar100"`` and ``"imagenet16"`` (16x16, 120 classes). FLOPs are the
    multiply-adds of the convolutions and the classifier, as the benchmark
    counts them.
    """
    if dataset not in _COST:
        raise ValueError(
            f"unknown NAS-Bench-201 dataset {dataset!r}; expected one of {list(_COST)}"
        )
    geno = _as_genotype(genotype)
    n3 = geno.ops.count("nor_conv_3x3")
    n1 = geno.ops.count("nor_conv_1x1")
    p0, p3, p1, f0, a3, a1 = _COST[dataset]
    return round(p0 + p3 * n3 + p1 * n1, 6), round(f0 + a3 * n3 + a1 * n1, 5)


# ---------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class NB201Result:
    """One cell's benchmark numbers (accuracies in %, cost of the CIFAR-10 net)."""

    arch: str
    index: int | None
    cifar10_valid: float
    cifar10_test: float
    cifar100_valid: float
    cifar100_test: float
    imagenet16_valid: float
    imagenet16_test: float
    params_m: float
    flops_m: float
    iso_rep: int | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def genotype(self) -> NB201Genotype:
        return NB201Genotype.from_arch_string(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict; the ``extra`` fields are merged in."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


def _as_genotype(arch: NB201Genotype | str) -> NB201Genotype:
    if isinstance(arch, NB201Genotype):
        return arch
    if isinstance(arch, str):
        return NB201Genotype.from_arch_string(arch)
    raise TypeError(
        f"expected an NB201Genotype or a NAS-Bench-201 arch string, got {type(arch).__name__}"
    )


@functools.lru_cache(maxsize=1)
def _canonical_arch_strings() -> frozenset[str]:
    """All 15,625 arch strings, for a fast validity check of table keys."""
    return frozenset(
        "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)
        for ops in itertools.product(NB201_OPS, repeat=NB201_NUM_EDGES)
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---------------------------------------------------------------------------- the table
class NB201Table:
    """The NAS-Bench-201 ground truth, arch string -> :class:`NB201Result`.

    Load with :meth:`NB201Table.load` (cached per file) or build from records
    already in memory with :meth:`NB201Table.from_records`.
    """

    def __init__(self, results: Mapping[str, NB201Result], source: str = "<memory>"):
        self._results: dict[str, NB201Result] = dict(results)
        self.source = source

    # -------------------------------------------------------------- construction
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, use_cache: bool = True) -> NB201Table:
        """Reads a table file (gzip or plain JSON; format in the module docstring).

        ``path`` may also be a folder holding ``nasbench201.json.gz``. With
        ``use_cache`` the parsed table is reused while the file is unchanged
        (same path, size and modification time); tables are read-only.
        """
        p = Path(path).expanduser()
        if p.is_dir() and (p / NB201_TABLE_FILENAME).is_file():
            p = p / NB201_TABLE_FILENAME
        if not p.is_file():
            where = "is a folder without " + NB201_TABLE_FILENAME if p.is_dir() else "not found"
            raise NB201TableError(
                f"NAS-Bench-201 table {where}: {str(p)!r}. il_tf does not ship the benchmark; "
                f"pass the path of a table file (the path is a setting, not fixed), e.g. the "
                f"project's shared copy ../shared/data/{NB201_TABLE_FILENAME}, or export the "
                f"official NAS-Bench-201 / NATS-Bench tss benchmark in the format described "
                f"in il_tf.nb201_lookup's docstring."
            )
        if not use_cache:
            return cls._read(p)
        st = p.stat()
        return _load_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)

    @classmethod
    def _read(cls, p: Path) -> NB201Table:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as err:
                raise NB201TableError(
                    f"NAS-Bench-201 table {str(p)!r} is not a valid gzip file "
                    f"(truncated or corrupt download?): {err}"
                ) from err
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise NB201TableError(
                f"NAS-Bench-201 table {str(p)!r} is not JSON (gzip-compressed or plain): {err}"
            ) from err
        return cls.from_records(data, source=str(p))

    @classmethod
    def from_records(
        cls, records: Mapping[str, Mapping[str, Any]], source: str = "<memory>"
    ) -> NB201Table:
        """Validates ``{arch string: record}`` (see the module docstring) into a table."""
        if not isinstance(records, Mapping):
            raise NB201TableError(
                f"NAS-Bench-201 table {source!r} must be a JSON object mapping arch strings "
                f"to records, got a JSON {type(records).__name__}"
            )
        if not records:
            raise NB201TableError(f"NAS-Bench-201 table {source!r} holds no architectures")
        canonical = _canonical_arch_strings()
        results: dict[str, NB201Result] = {}
        seen_index: dict[int, str] = {}
        for arch, rec in records.items():
            if arch not in canonical:  # the strict parser names what is wrong
                try:
                    NB201Genotype.from_arch_string(arch)
                except NB201GenotypeError as err:
                    raise NB201TableError(
                        f"NAS-Bench-201 table {source!r} has a key that is not an arch string: {err}"
                    ) from None
            if not isinstance(rec, Mapping):
                raise NB201TableError(
                    f"NAS-Bench-201 table {source!r}: the record of arch {arch!r} must be a "
                    f"JSON object, got {type(rec).__name__}"
                )
            results[arch] = _make_result(arch, rec, source, seen_index)
        return cls(results, source=source)

    # -------------------------------------------------------------- queries
    def lookup(self, arch: NB201Genotype | str) -> NB201Result:
        """The numbers of one cell; ``arch`` is an :class:`NB201Genotype` or arch string.

        A malformed string raises :class:`NB201GenotypeError` (a ValueError);
        a valid cell that this table lacks raises :class:`NB201ArchNotFoundError`
        (a KeyError).
        """
        key = _as_genotype(arch).to_arch_string()
        try:
            return self._results[key]
        except KeyError:
            raise NB201ArchNotFoundError(
                f"arch {key!r} is not in the NAS-Bench-201 table {self.source!r} "
                f"({len(self)} of {NB201_NUM_CELLS} cells)"
            ) from None

    __getitem__ = lookup

    def __contains__(self, arch: object) -> bool:
        try:
            key = _as_genotype(arch).to_arch_string()  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return key in self._results

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def results(self) -> Iterator[NB201Result]:
        return iter(self._results.values())

    @property
    def is_complete(self) -> bool:
        """True when the table holds all 15,625 cells."""
        return len(self._results) == NB201_NUM_CELLS

    def best(self, field: str = "cifar10_test", *, minimize: bool = False) -> tuple[str, float]:
        """``(arch, value)`` of the cell with the highest (or lowest) ``field``.

        ``field`` is an accuracy field, ``params_m``, ``flops_m`` or a numeric
        extra field present in every record. Ties go to the smallest arch
        index (then the arch string), e.g. the two CIFAR-10-test optima
        6111 and 13714 give 6111.
        """
        fixed = NB201_ACCURACY_FIELDS + _COST_FIELDS
        if field in fixed:
            values = ((r, getattr(r, field)) for r in self._results.values())
        else:
            if not all(_is_number(r.extra.get(field)) for r in self._results.values()):
                raise ValueError(
                    f"cannot rank by {field!r}: it is not a numeric field of every record "
                    f"in {self.source!r}; use one of {list(fixed)}"
                )
            values = ((r, r.extra[field]) for r in self._results.values())
        sign = 1.0 if minimize else -1.0
        big = NB201_NUM_CELLS + 1

        def key(item: tuple[NB201Result, float]) -> tuple[float, int, str]:
            r, v = item
            return (sign * v, big if r.index is None else r.index, r.arch)

        r, v = min(values, key=key)
        return r.arch, v

    def __repr__(self) -> str:
        return f"NB201Table({len(self)} cells from {self.source!r})"


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, size: int, mtime_ns: int) -> NB201Table:
    del size, mtime_ns  # part of the cache key only
    return NB201Table._read(Path(path))


def _make_result(
    arch: str, rec: Mapping[str, Any], source: str, seen_index: dict[int, str]
) -> NB201Result:
    # Fast path for the common, well-formed record (all floats, int ids, no
    # duplicates); anything unusual goes through the checks below.
    vals = [rec.get(f) for f in _FAST_FIELDS]
    index, iso_rep = rec.get("index"), rec.get("iso_rep")
    if (
        all(type(v) is float and v - v == 0.0 for v in vals)
        and (index is None or (type(index) is int and index >= 0 and index not in seen_index))
        and (iso_rep is None or (type(iso_rep) is int and iso_rep >= 0))
    ):
        if index is not None:
            seen_index[index] = arch
        extra = {k: v for k, v in rec.items() if k not in _KNOWN_FIELDS}
        return NB201Result(arch, index, *vals, iso_rep=iso_rep, extra=extra)

    def bad(field: str, what: str) -> NB201TableError:
        return NB201TableError(
            f"NAS-Bench-201 table {source!r}, arch {arch!r}: field {field!r} {what}"
        )

    acc = {}
    for field in NB201_ACCURACY_FIELDS:
        if field not in rec:
            raise bad(
                field,
                f"is missing (required fields: {', '.join(NB201_ACCURACY_FIELDS)}; "
                f"the record has {sorted(rec)})",
            )
        v = rec[field]
        if not _is_number(v):
            raise bad(field, f"must be a finite number (accuracy in %), got {v!r}")
        acc[field] = float(v)
    ints: dict[str, int | None] = {}
    for field in _INT_FIELDS:
        v = rec.get(field)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise bad(field, f"must be a non-negative integer, got {v!r}")
        ints[field] = v
    index = ints["index"]
    if index is not None:
        if index in seen_index:
            raise bad("index", f"= {index} is also the index of arch {seen_index[index]!r}")
        seen_index[index] = arch
    cost: dict[str, float] = {}
    for field in _COST_FIELDS:
        v = rec.get(field)
        if v is not None and not _is_number(v):
            raise bad(field, f"must be a finite number, got {v!r}")
        if v is not None:
            cost[field] = float(v)
    if len(cost) < len(_COST_FIELDS):
        computed = dict(zip(_COST_FIELDS, nb201_cost(arch), strict=True))
        cost = {**computed, **cost}
    extra = {k: v for k, v in rec.items() if k not in _KNOWN_FIELDS}
    return NB201Result(arch=arch, index=index, **acc, **cost, iso_rep=ints["iso_rep"], extra=extra)


# ---------------------------------------------------------------------------- published
@dataclasses.dataclass(frozen=True)
class PublishedNB201Result:
    """A published NAS-Bench-201 search result (accuracy in %, mean and std over runs).

    Field names match :class:`NB201Result`; ``None`` where the source gives
    no value (or, for ``*_std``, no spread).
    """

    method: str
    cifar10_valid: float | None = None
    cifar10_valid_std: float | None = None
    cifar10_test: float | None = None
    cifar10_test_std: float | None = None
    cifar100_valid: float | None = None
    cifar100_valid_std: float | None = None
    cifar100_test: float | None = None
    cifar100_test_std: float | None = None
    imagenet16_valid: float | None = None
    imagenet16_valid_std: float | None = None
    imagenet16_test: float | None = None
    imagenet16_test_std: float | None = None
    source: str = ""

    def value(self, field: str) -> tuple[float | None, float | None]:
        """``(mean, std)`` of an accuracy field such as ``"cifar10_test"``."""
        if field not in NB201_ACCURACY_FIELDS:
            raise ValueError(f"unknown field {field!r}; expected one of {NB201_ACCURACY_FIELDS}")
        return getattr(self, field), getattr(self, field + "_std")

    def format(self, field: str, digits: int = 2) -> str:
        """E.g. ``"93.61±0.09"``, ``"94.37"`` (no std given) or ``"-"`` (no value)."""
        mean, std = self.value(field)
        if mean is None:
            return "-"
        return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f}±{std:.{digits}f}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _row(method: str, values: str, source: str) -> PublishedNB201Result:
    """``values``: 'c10v c10t | c100v c100t | in16v in16t', each 'mean' or 'mean±std'."""
    cells = values.replace("|", " ").split()
    assert len(cells) == len(NB201_ACCURACY_FIELDS), (method, cells)
    kw: dict[str, float | None] = {}
    for field, cell in zip(NB201_ACCURACY_FIELDS, cells, strict=True):
        mean, _, std = cell.partition("±")
        kw[field] = float(mean)
        kw[field + "_std"] = float(std) if std else None
    return PublishedNB201Result(method=method, source=source, **kw)  # type: ignore[arg-type]


_NB201_PAPER = (
    "NAS-Bench-201 paper (Dong & Yang, ICLR 2020), as quoted by the ReLIZO paper "
    "(not read from the NB201 PDF itself)"
)
_LATER = "as quoted in the GENIUS, CoLLM-NAS and MathNAS papers"

#: Published NB201 search results, method -> row, in the usual table order.
#: Columns C10 valid/test | C100 valid/test | IN16 valid/test; see
#: shared/data/NASBENCH201.md for where each number was read.
PUBLISHED_NB201: Mapping[str, PublishedNB201Result] = types.MappingProxyType(
    {
        r.method: r
        for r in (
            _row(
                "DARTS-V1",
                "39.77±0.00 54.30±0.00 | 15.03±0.00 15.61±0.00 | 16.43±0.00 16.32±0.00",
                f"{_NB201_PAPER}; 1st order; collapse to the all-skip_connect cell "
                "(arch index 1835), whose table values these are",
            ),
            _row(
                "DARTS-V2",
                "39.77±0.00 54.30±0.00 | 15.03±0.00 15.61±0.00 | 16.43±0.00 16.32±0.00",
                f"{_NB201_PAPER}; 2nd order; same all-skip_connect collapse (index 1835)",
            ),
            _row(
                "ENAS",
                "37.51±3.19 53.89±0.58 | 13.37±2.35 13.96±2.33 | 15.06±1.95 14.84±2.10",
                f"{_NB201_PAPER}; some later tables print C100 10.23/10.62 instead",
            ),
            _row(
                "RSPS",
                "84.16±1.69 87.66±1.69 | 45.78±6.33 46.60±6.57 | 31.09±5.65 30.78±6.12",
                "random search with parameter sharing, as printed by later papers "
                "(a revised run); the NB201 paper's table as quoted by ReLIZO gives "
                "80.42±3.58/84.07±3.61 | 52.12±5.55/52.31±5.77 | 27.22±3.24/26.28±3.09",
            ),
            _row(
                "SETN",
                "84.04±0.28 87.64±0.00 | 58.86±0.06 59.05±0.24 | 33.06±0.02 32.52±0.21",
                _NB201_PAPER,
            ),
            _row(
                "GDAS",
                "89.89±0.08 93.61±0.09 | 71.34±0.04 70.70±0.30 | 41.59±1.33 41.71±0.98",
                _NB201_PAPER,
            ),
            _row(
                "PC-DARTS",
                "89.96±0.15 93.41±0.30 | 67.12±0.39 67.48±0.89 | 40.83±0.08 41.31±0.22",
                _LATER,
            ),
            _row(
                "DARTS-",
                "91.03±0.44 93.80±0.40 | 71.36±1.51 71.53±1.51 | 44.87±1.46 45.12±0.82",
                _LATER,
            ),
            _row(
                "DrNAS",
                "91.55±0.00 94.36±0.00 | 73.49±0.00 73.51±0.00 | 46.37±0.00 46.34±0.00",
                f"{_LATER}; the cell of arch index 9930, whose table values these are "
                "(beta-DARTS and Lambda-DARTS report the same)",
            ),
            _row(
                "optimal",
                "91.61 94.37 | 73.49 73.51 | 46.77 47.31",
                "best value of each column over all cells, NAS-Bench-201 paper; the table "
                "gives the same except ImageNet16-120 valid 46.73 (the paper probably used "
                "benchmark v1_0)",
            ),
        )
    }
)


class NB201Reporter:
    """A search's epoch-end look-up of the found cell in a NAS-Bench-201 table.

    ``report(genotype)`` gives the record's ``nb201`` entry (every field of the table's
    record) and the line to print. Made by :meth:`for_space`, which refuses a supernet
    of another space.
    """

    key = "nb201"

    def __init__(self, table: NB201Table):
        self.table = table

    @classmethod
    def for_space(cls, path: str | os.PathLike[str], space) -> NB201Reporter:
        """The reporter of the table at ``path`` for the search space ``space``."""
        if not issubclass(space.genotype_type, NB201Genotype):
            raise ValueError(
                f"SearchConfig.nb201_table is set, but the supernet searches the "
                f"{space.space!r} space; the table scores cells of the NAS-Bench-201 space "
                "only (SearchConfig.supernet = @nb201_supernet)"
            )
        return cls(NB201Table.load(path))

    def report(self, genotype: NB201Genotype) -> tuple[dict[str, Any], str]:
        """The look-up of ``genotype`` as a record entry, and the line to print."""
        lookup = self.table.lookup(genotype).to_dict()
        line = (
            "NAS-Bench-201 look-up: CIFAR-10 test {cifar10_test:.2f}, CIFAR-100 test "
            "{cifar100_test:.2f}, ImageNet16-120 test {imagenet16_test:.2f}".format(**lookup)
        )
        return lookup, line
