"""Tests of the NAS-Bench-201 look-up table and the published reference rows."""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
from pathlib import Path

import pytest

from il_tf import nb201_lookup
from il_tf.nb201_lookup import (
    NB201_ACCURACY_FIELDS,
    PUBLISHED_NB201,
    NB201ArchNotFoundError,
    NB201Result,
    NB201Table,
    NB201TableError,
    nb201_cost,
)
from il_tf.spaces import nb201_genotype
from il_tf.spaces.nb201_genotype import NB201Genotype, NB201GenotypeError, all_nb201_genotypes

ALL_SKIP = (
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|"
    "+|skip_connect~0|skip_connect~1|skip_connect~2|"
)
DRNAS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)
BEST_C10 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _record(index=None, base=50.0, **overrides):
    rec = {f: base + i for i, f in enumerate(NB201_ACCURACY_FIELDS)}
    if index is not None:
        rec["index"] = index
    rec.update(overrides)
    return rec


TINY = {
    ALL_SKIP: _record(1835, base=10.0, params_m=0.073306, flops_m=7.78305, nats_cifar10_test=54.3),
    DRNAS: _record(9930, base=70.0, iso_rep=9930),
    ALL_NONE: _record(7, base=10.0),
}


@pytest.fixture(scope="module")
def table(nb201_table_path: Path) -> NB201Table:
    return NB201Table.load(nb201_table_path)


# ---------------------------------------------------------------------------- the real table
def test_real_table_covers_the_space(table: NB201Table):
    assert len(table) == 15625 and table.is_complete
    genos = {g.to_arch_string() for g in all_nb201_genotypes()}
    assert set(table) == genos
    for arch in table:  # arch-string round trip of every key
        assert NB201Genotype.from_arch_string(arch).to_arch_string() == arch
    assert sorted(r.index for r in table.results()) == list(range(15625))


def test_published_cells(table: NB201Table):
    skip = table.lookup(ALL_SKIP)
    assert skip.index == 1835
    assert round(skip.cifar10_test, 2) == 54.30
    assert round(skip.cifar100_test, 2) == 15.61
    assert round(skip.imagenet16_test, 2) == 16.32
    assert round(skip.cifar10_valid, 2) == 39.77
    drnas = table.lookup(NB201Genotype.from_arch_string(DRNAS))
    assert drnas.index == 9930 and round(drnas.cifar10_test, 2) == 94.36
    arch, value = table.best("cifar10_test")
    assert arch == BEST_C10 and table.lookup(arch).index == 6111 and round(value, 2) == 94.37
    # The published rows that name a cell agree with the table to 2 decimals.
    for method, result in (("DARTS-V1", skip), ("DARTS-V2", skip), ("DrNAS", drnas)):
        row = PUBLISHED_NB201[method]
        for field in NB201_ACCURACY_FIELDS:
            assert round(getattr(result, field), 2) == getattr(row, field), (method, field)
    optimal = PUBLISHED_NB201["optimal"]
    for field in ("cifar10_test", "cifar100_test", "imagenet16_test", "cifar10_valid"):
        assert round(table.best(field)[1], 2) == getattr(optimal, field), field


def test_real_table_queries(table: NB201Table):
    assert table.lookup(DRNAS) is table.lookup(NB201Genotype.from_arch_string(DRNAS))
    assert table[DRNAS] is table.lookup(DRNAS)
    assert DRNAS in table and NB201Genotype.from_arch_string(DRNAS) in table
    assert "not an arch" not in table and 3 not in table
    r = table.lookup(DRNAS)
    assert r.genotype == NB201Genotype.from_arch_string(DRNAS)
    assert r.iso_rep == 9930 and set(r.extra) >= {"nats_cifar10_test"}
    d = r.to_dict()
    assert d["arch"] == DRNAS and d["index"] == 9930 and "nats_cifar10_test" in d
    assert json.loads(json.dumps(d)) == d
    assert table.best("params_m", minimize=True)[1] == pytest.approx(0.073306)
    assert table.best("nats_cifar10_test")[0] == BEST_C10
    with pytest.raises(NB201GenotypeError, match="unknown op 'conv'"):
        table.lookup(ALL_NONE.replace("none~2", "conv~2"))
    with pytest.raises(TypeError, match="NB201Genotype or a NAS-Bench-201 arch string"):
        table.lookup(42)  # type: ignore[arg-type]


def test_cost_formula_matches_table(table: NB201Table):
    for r in table.results():
        params, flops = nb201_cost(r.arch)
        assert params == pytest.approx(r.params_m, abs=1e-9), r.arch
        assert flops == pytest.approx(r.flops_m, abs=1e-9), r.arch


def test_load_is_cached(nb201_table_path: Path, table: NB201Table):
    assert NB201Table.load(nb201_table_path) is table
    assert NB201Table.load(nb201_table_path.parent) is table  # a folder holding the file


# ---------------------------------------------------------------------------- tiny tables
def _write(path: Path, data, *, compress: bool) -> Path:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_tiny_table_loads(tmp_path: Path, compress: bool):
    # The file name does not decide the format: the content does.
    path = _write(tmp_path / "table.json", TINY, compress=compress)
    table = NB201Table.load(path, use_cache=False)
    assert len(table) == 3 and not table.is_complete
    skip = table.lookup(ALL_SKIP)
    assert isinstance(skip, NB201Result)
    assert skip.index == 1835 and skip.cifar10_valid == 10.0 and skip.imagenet16_test == 15.0
    assert skip.extra == {"nats_cifar10_test": 54.3}
    # Absent params/flops are computed; absent index/iso_rep are None.
    assert (table.lookup(DRNAS).params_m, table.lookup(DRNAS).flops_m) == nb201_cost(DRNAS)
    assert table.lookup(DRNAS).iso_rep == 9930 and table.lookup(ALL_NONE).iso_rep is None
    # Ties on the value go to the smallest index (ALL_NONE, 7, before ALL_SKIP, 1835).
    assert table.best("cifar10_test") == (DRNAS, 71.0)
    assert table.best("cifar10_test", minimize=True) == (ALL_NONE, 11.0)
    with pytest.raises(ValueError, match="cannot rank by 'nats_cifar10_test'"):
        table.best("nats_cifar10_test")  # not in every record
    missing = "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"
    with pytest.raises(NB201ArchNotFoundError) as info:
        table.lookup(missing)
    assert isinstance(info.value, KeyError)
    assert str(info.value) == (
        f"arch {missing!r} is not in the NAS-Bench-201 table {str(path)!r} (3 of 15625 cells)"
    )


def test_tiny_table_optional_fields(tmp_path: Path):
    table = NB201Table.from_records({ALL_SKIP: _record(params_m=1, flops_m=2)})
    r = table.lookup(ALL_SKIP)
    assert r.index is None and r.params_m == 1.0 and r.flops_m == 2.0 and r.extra == {}
    assert table.best("flops_m") == (ALL_SKIP, 2.0)


def test_cache_follows_file_changes(tmp_path: Path):
    path = _write(tmp_path / "t.json.gz", TINY, compress=True)
    first = NB201Table.load(path)
    assert NB201Table.load(path) is first
    _write(path, {ALL_SKIP: TINY[ALL_SKIP]}, compress=True)
    os.utime(path, ns=(1, 1))  # a distinct modification time, whatever the clock resolution
    assert len(NB201Table.load(path)) == 1


def test_missing_file(tmp_path: Path):
    with pytest.raises(NB201TableError) as info:
        NB201Table.load(tmp_path / "nope.json.gz")
    msg = str(info.value)
    assert "not found" in msg and "nope.json.gz" in msg
    assert "nasbench201.json.gz" in msg and "the path is a setting" in msg
    assert "does not ship the benchmark" in msg
    with pytest.raises(NB201TableError, match="is a folder without nasbench201.json.gz"):
        NB201Table.load(tmp_path)


@pytest.mark.parametrize(
    ("content", "compress", "match"),
    [
        (b"not json at all", False, "is not JSON"),
        (b"not json at all", True, "is not JSON"),
        (b"\xff\xfe\x00garbage", False, "is not JSON"),
        # mtime=0: the bytes (and so the test id) must not depend on the time of
        # collection, or pytest-xdist workers collect different tests.
        (gzip.compress(b"{}", mtime=0)[:-6], False, "is not a valid gzip file"),
        (b'["a list"]', False, "must be a JSON object mapping arch strings"),
        (b"{}", True, "holds no architectures"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, compress: bool, match: str):
    path = _write(tmp_path / "bad.json.gz", content, compress=compress)
    with pytest.raises(NB201TableError, match=match):
        NB201Table.load(path, use_cache=False)


def _without(rec: dict, field: str) -> dict:
    return {k: v for k, v in rec.items() if k != field}


@pytest.mark.parametrize(
    ("records", "match"),
    [
        (
            {ALL_SKIP: _without(_record(1), "cifar100_test")},
            "arch " + re.escape(repr(ALL_SKIP)) + r": field 'cifar100_test' is missing \(required",
        ),
        (
            {DRNAS: _record(1, cifar10_test="94.3")},
            r"'cifar10_test' must be a finite number .* '94.3'",
        ),
        ({DRNAS: _record(1, cifar10_test=float("nan"))}, r"'cifar10_test' must be a finite number"),
        ({DRNAS: _record(1, imagenet16_valid=True)}, r"'imagenet16_valid' must be a finite number"),
        ({DRNAS: _record(1, params_m="big")}, r"'params_m' must be a finite number"),
        ({DRNAS: _record(index=-1)}, r"'index' must be a non-negative integer, got -1"),
        ({DRNAS: _record(index=2.0)}, r"'index' must be a non-negative integer, got 2.0"),
        ({DRNAS: _record(1, iso_rep="x")}, r"'iso_rep' must be a non-negative integer"),
        (
            {DRNAS: _record(5), ALL_SKIP: _record(5)},
            r"'index' = 5 is also the index of arch '\|nor",
        ),
        ({DRNAS: [1, 2]}, r"record of arch .* must be a JSON object, got list"),
        (
            {"|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|": _record(1)},
            r"key that is not an arch string: .* unknown op 'nor_conv_5x5'.* op one of: none",
        ),
        ({"1<-0": _record(1)}, r"key that is not an arch string: .*'1<-0'"),
    ],
)
def test_bad_records(tmp_path: Path, records, match):
    with pytest.raises(NB201TableError, match=match):
        NB201Table.from_records(records, source="mine.json")
    # The same error comes out of a file, naming the file.
    path = _write(tmp_path / "mine.json", records, compress=False)
    with pytest.raises(NB201TableError, match=re.escape(repr(str(path))) + ".*" + match):
        NB201Table.load(path, use_cache=False)


# ---------------------------------------------------------------------------- cost, published rows
def test_cost_other_datasets():
    assert nb201_cost(ALL_SKIP) == (0.073306, 7.78305)
    assert nb201_cost(NB201Genotype.from_arch_string(DRNAS), "cifar100") == (
        round(0.079156 + 5 * 0.24304, 6),
        round(7.7889 + 5 * 35.38944, 5),
    )
    assert nb201_cost(ALL_NONE, "imagenet16") == (0.080456, 1.9534)
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 dataset 'svhn'"):
        nb201_cost(ALL_NONE, "svhn")


def test_published_rows():
    assert list(PUBLISHED_NB201) == [
        "DARTS-V1",
        "DARTS-V2",
        "ENAS",
        "RSPS",
        "SETN",
        "GDAS",
        "PC-DARTS",
        "DARTS-",
        "DrNAS",
        "optimal",
    ]
    expected_c10 = {
        "DARTS-V1": 54.30,
        "ENAS": 53.89,
        "RSPS": 87.66,
        "SETN": 87.64,
        "GDAS": 93.61,
        "PC-DARTS": 93.41,
        "DARTS-": 93.80,
        "DrNAS": 94.36,
        "optimal": 94.37,
    }
    for method, c10 in expected_c10.items():
        assert PUBLISHED_NB201[method].cifar10_test == c10
    gdas = PUBLISHED_NB201["GDAS"]
    assert gdas.value("cifar100_test") == (70.70, 0.30) and gdas.imagenet16_test == 41.71
    assert gdas.format("cifar10_test") == "93.61±0.09"
    assert PUBLISHED_NB201["optimal"].format("imagenet16_test") == "47.31"
    assert PUBLISHED_NB201["optimal"].cifar100_test == 73.51
    assert PUBLISHED_NB201["DrNAS"].value("imagenet16_test") == (46.34, 0.0)
    assert all(row.source for row in PUBLISHED_NB201.values())
    assert all(row.cifar10_test is not None for row in PUBLISHED_NB201.values())
    assert PUBLISHED_NB201["RSPS"].to_dict()["cifar10_test_std"] == 1.69
    with pytest.raises(ValueError, match="unknown field"):
        gdas.value("cifar10")
    with pytest.raises(TypeError):
        PUBLISHED_NB201["new"] = gdas  # type: ignore[index]


def test_modules_do_not_import_tensorflow():
    for module in (nb201_lookup, nb201_genotype):
        roots = set()
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots.add(node.module.split(".")[0])
        assert not roots & {"tensorflow", "keras"}, (module.__name__, roots)
