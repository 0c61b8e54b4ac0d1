"""Tests for il_tf.spaces.genotypes: validation, JSON files, derivation, published cells."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from il_tf.spaces import genotypes as g
from il_tf.spaces.genotypes import (
    DARTS_OPS,
    DARTS_V2,
    PUBLISHED,
    Genotype,
    GenotypeError,
    derive_genotype,
    edge_index,
    load_genotype,
    save_genotype,
)

COL = {op: k for k, op in enumerate(DARTS_OPS)}
CONCAT = (2, 3, 4, 5)


def _alpha(entries: dict[tuple[int, int, str], float], steps: int = 4) -> np.ndarray:
    """Zero logits except ``alpha[edge(node, input), op] = value``."""
    a = np.zeros((g.num_edges(steps), len(DARTS_OPS)))
    for (node, inp, op), value in entries.items():
        a[edge_index(node, inp), COL[op]] = value
    return a


def _alpha_of(cell: tuple[tuple[str, int], ...]) -> np.ndarray:
    """Logits whose derivation is ``cell`` (first edge of each node the stronger)."""
    return _alpha({(k // 2, j, op): 10.0 - (k % 2) for k, (op, j) in enumerate(cell)})


# ---------------------------------------------------------------------- edge order
def test_edge_order_matches_darts():
    assert g.num_edges(4) == 14
    assert g.num_edges(2) == 5
    pairs = g.edges(4)
    assert len(pairs) == 14
    assert pairs[:5] == ((0, 0), (0, 1), (1, 0), (1, 1), (1, 2))
    assert [edge_index(i, j) for i, j in pairs] == list(range(14))
    with pytest.raises(GenotypeError, match="0 <= input < node \\+ 2"):
        edge_index(1, 3)


def test_softmax_alphas_rows_sum_to_one():
    w = g.softmax_alphas(np.array([[0.0, 0.0], [1000.0, 0.0]]))
    np.testing.assert_allclose(w, [[0.5, 0.5], [1.0, 0.0]])


# ---------------------------------------------------------------------- validation
def test_genotype_accepts_lists_and_ranges_and_stores_tuples():
    gt = Genotype(
        normal=[list(e) for e in DARTS_V2.normal],
        normal_concat=range(2, 6),
        reduce=list(DARTS_V2.reduce),
        reduce_concat=[2, 3, 4, 5],
    )
    assert gt == DARTS_V2
    assert gt.normal_concat == CONCAT and isinstance(gt.normal[0], tuple)
    assert gt.steps == 4
    assert hash(gt) == hash(DARTS_V2)


def _with(cell="normal", index=0, entry=None, **fields):
    base = dict(
        normal=list(DARTS_V2.normal),
        normal_concat=list(CONCAT),
        reduce=list(DARTS_V2.reduce),
        reduce_concat=list(CONCAT),
    )
    if entry is not None:
        base[cell][index] = entry
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        (
            _with(index=3, entry=("conv_7x7", 1)),
            r"normal\[3\] = \('conv_7x7', 1\): unknown op 'conv_7x7'; allowed ops: "
            r"max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3",
        ),
        (_with(cell="reduce", index=1, entry=("none", 1)), r"reduce\[1\].*'none' is not allowed"),
        (
            _with(index=3, entry=("sep_conv_3x3", 3)),
            r"normal\[3\] = \('sep_conv_3x3', 3\): bad node index 3 for intermediate node 1 "
            r".*0 <= input < 3",
        ),
        (_with(index=0, entry=("sep_conv_3x3", -1)), r"normal\[0\].*bad node index -1"),
        (_with(normal=list(DARTS_V2.normal)[:7]), r"'normal' has 7 edges.*2 edges per"),
        (_with(normal=[]), r"'normal' has 0 edges"),
        (_with(reduce=list(DARTS_V2.reduce)[:6]), r"'normal' has 8 edges but 'reduce' has 6"),
        (
            _with(index=1, entry=("sep_conv_3x3", 0)),
            r"normal\[0\] and normal\[1\] both take input 0.*distinct predecessors",
        ),
        (_with(normal_concat=[2, 3, 6]), r"normal_concat\[2\] = 6 is out of range.*2\.\.5"),
        (_with(reduce_concat=[1, 2]), r"reduce_concat\[0\] = 1 is out of range"),
        (_with(reduce_concat=[]), r"'reduce_concat' is empty"),
        (_with(normal_concat=[2, 2]), r"repeats a state"),
        (_with(index=2, entry=("sep_conv_3x3",)), r"normal\[2\] must be an \(op, input\) pair"),
        (_with(index=2, entry=("sep_conv_3x3", True)), r"normal\[2\] must be an \(op, input\)"),
        (_with(normal="sep_conv_3x3"), r"'normal' must be a sequence"),
        (_with(normal_concat=[2, "3"]), r"normal_concat\[1\] must be an integer"),
    ],
)
def test_malformed_genotypes_are_rejected(fields, pattern):
    with pytest.raises(GenotypeError, match=pattern):
        Genotype(**fields)


def test_genotype_error_is_a_value_error():
    assert issubclass(GenotypeError, ValueError)


# ---------------------------------------------------------------------- JSON
def test_json_dict_format():
    d = DARTS_V2.to_json_dict()
    assert d == {
        "format": "il_tf.genotype/v1",
        "space": "darts",
        "normal": [[op, j] for op, j in DARTS_V2.normal],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [[op, j] for op, j in DARTS_V2.reduce],
        "reduce_concat": [2, 3, 4, 5],
    }
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_json_round_trip(name):
    gt = PUBLISHED[name]
    assert Genotype.from_json(gt.to_json()) == gt
    assert Genotype.from_json_dict(json.loads(gt.to_json(indent=2))) == gt


def _record(**changes):
    d = DARTS_V2.to_json_dict()
    for key, value in changes.items():
        if value is None:
            del d[key]
        else:
            d[key] = value
    return d


@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        (
            _record(normal=[["sep_conv_3x3", 0]] * 3 + [["sep_conv_3x3"]] + [["x", 0]] * 4),
            r"genotype field 'normal'\[3\] must be \[op, input\].*\['sep_conv_3x3'\]",
        ),
        (_record(reduce=[["max_pool_3x3", "0"]] * 8), r"field 'reduce'\[0\] must be \[op, input\]"),
        (_record(normal="sep_conv_3x3"), r"field 'normal' must be a list of \[op, input\] pairs"),
        (_record(normal_concat=[2, 3.0]), r"field 'normal_concat' must be a list of integers"),
        (_record(reduce_concat=None), r"field 'reduce_concat' is missing"),
        (_record(format="il_tf.genotype/v9"), r"unsupported genotype format 'il_tf.genotype/v9'"),
        (_record(space="nas-bench-201"), r"search space 'nas-bench-201', not 'darts'"),
    ],
)
def test_from_json_dict_names_bad_field(record, pattern):
    with pytest.raises(GenotypeError, match=pattern):
        Genotype.from_json_dict(record)


def test_from_json_dict_accepts_hand_written_record_without_format_and_space():
    assert Genotype.from_json_dict(_record(format=None, space=None)) == DARTS_V2


def test_from_json_reports_line_and_column():
    with pytest.raises(GenotypeError, match="invalid JSON at line 2, column"):
        Genotype.from_json('{"normal":\n ]')


# ---------------------------------------------------------------------- files
def test_save_load_round_trip_with_metadata(tmp_path):
    path = tmp_path / "sub" / "genotype.json"
    meta = {"epoch": 49, "val_acc": np.float32(0.875), "alpha": np.zeros((2, 2))}
    assert save_genotype(path, DARTS_V2, meta) == path
    assert sorted(os.listdir(path.parent)) == ["genotype.json"]  # no temp file left behind
    data = json.loads(path.read_text())
    assert data["genotype"] == DARTS_V2.to_json_dict()
    assert data["epoch"] == 49 and data["val_acc"] == 0.875 and data["alpha"] == [[0, 0], [0, 0]]
    assert load_genotype(path) == DARTS_V2
    assert load_genotype(str(path)) == DARTS_V2
    gt, loaded_meta = g.load_genotype_with_metadata(path)
    assert gt == DARTS_V2 and loaded_meta == {
        "epoch": 49,
        "val_acc": 0.875,
        "alpha": [[0, 0], [0, 0]],
    }

    save_genotype(path, g.P_DARTS)  # overwrite in place
    assert load_genotype(path) == g.P_DARTS
    assert sorted(os.listdir(path.parent)) == ["genotype.json"]


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "genotype.json"
    save_genotype(path, DARTS_V2)
    before = path.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(g.os, "replace", crash)
    # One line naming the file and the cause (il_tf.rundir.RunDirError, a ValueError).
    with pytest.raises(ValueError, match="cannot write .*genotype.json: disk full"):
        save_genotype(path, g.P_DARTS)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["genotype.json"]


def test_save_rejects_unserializable_metadata_without_touching_disk(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serializable"):
        save_genotype(tmp_path / "g.json", DARTS_V2, {"bad": object()})
    assert os.listdir(tmp_path) == []
    with pytest.raises(GenotypeError, match="may not contain the key 'genotype'"):
        save_genotype(tmp_path / "g.json", DARTS_V2, {"genotype": 1})


def test_load_bare_genotype_dict_file(tmp_path):
    path = tmp_path / "bare.json"
    path.write_text(DARTS_V2.to_json())
    assert load_genotype(path) == DARTS_V2
    assert g.load_genotype_with_metadata(path)[1] == {}


def _write(tmp_path, content) -> str:
    path = tmp_path / "g.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (
            '{"genotype": {"normal": [\n\n  ["sep_conv_3x3", 0],,]}}',
            r"invalid JSON at line 3, column",
        ),
        ({"genotype": _record(space="nasbench9000")}, r"unknown genotype space 'nasbench9000'"),
        (
            {
                "genotype": _record(
                    normal=[["conv_9x9", 0]] + [list(e) for e in DARTS_V2.normal[1:]]
                )
            },
            r"unknown op 'conv_9x9'; allowed ops:",
        ),
        (
            {"genotype": _record(normal=[["sep_conv_3x3", 0], ["sep_conv_3x3", 2]] * 4)},
            r"normal\[1\] = \('sep_conv_3x3', 2\): bad node index 2",
        ),
        ({"genotype": _record(reduce=[["max_pool_3x3", 0]] * 3)}, r"'reduce' has 3 edges"),
        ([1, 2, 3], r"expected a JSON object, got list"),
        ({"genotype": [1, 2]}, r"must be a JSON object"),
    ],
)
def test_malformed_genotype_files_are_rejected(tmp_path, content, pattern):
    path = _write(tmp_path, content)
    with pytest.raises(GenotypeError, match=pattern) as info:
        load_genotype(path)
    assert path in str(info.value)


def test_missing_file_and_unknown_name(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError, match=f"genotype file not found: {missing}"):
        load_genotype(missing)
    with pytest.raises(GenotypeError, match="genotype file not found: runs/x.json"):
        load_genotype("runs/x.json")
    with pytest.raises(
        GenotypeError,
        match=r"unknown genotype 'DARTS_V3'.*published names: DARTS_V1, DARTS_V2, PC_DARTS, P_DARTS",
    ):
        load_genotype("DARTS_V3")


# ---------------------------------------------------------------------- published
@pytest.mark.parametrize("name", ["DARTS_V1", "darts_v2", "PC_DARTS", "p_darts", "pc-darts"])
def test_published_names_load(name):
    gt = load_genotype(name)
    assert gt is g.get_published(name)
    assert gt.steps == 4 and gt.normal_concat == CONCAT and gt.reduce_concat == CONCAT


def test_published_cells_are_the_papers():
    assert set(PUBLISHED) == {"DARTS_V1", "DARTS_V2", "PC_DARTS", "P_DARTS"}
    assert g.get_published("darts") is DARTS_V2 is g.DARTS
    # Spot checks against the authors' code (quark0/darts, PC-DARTS, pdarts).
    assert DARTS_V2.normal[-1] == ("dil_conv_3x3", 2)
    assert DARTS_V2.reduce[:2] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert g.DARTS_V1.reduce[-1] == ("avg_pool_3x3", 0)
    assert g.PC_DARTS.reduce[5] == ("sep_conv_3x3", 3)
    assert g.P_DARTS.normal[-1] == ("dil_conv_5x5", 4)
    ops = [op for op, _ in DARTS_V2.normal]
    assert ops.count("sep_conv_3x3") == 5 and ops.count("skip_connect") == 2


def test_get_published_error_lists_names():
    with pytest.raises(
        GenotypeError, match="published names: DARTS_V1, DARTS_V2, PC_DARTS, P_DARTS"
    ):
        g.get_published("ENAS")


# ---------------------------------------------------------------------- derivation
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_derivation_reproduces_published_cells(name):
    gt = PUBLISHED[name]
    assert derive_genotype(_alpha_of(gt.normal), _alpha_of(gt.reduce)) == gt


def test_zero_alpha_follows_darts_tie_breaking():
    # Equal weights: the first non-none op and the lowest inputs win, as in DARTS.
    gt = derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)))
    assert gt.normal == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
    assert gt.normal_concat == CONCAT


def test_strongest_edges_first_and_none_excluded():
    a = _alpha(
        {
            # node 0: 'none' is the largest weight on edge 0 but is never kept.
            (0, 0, "none"): 9.0,
            (0, 0, "sep_conv_5x5"): 1.0,
            (0, 1, "dil_conv_3x3"): 3.0,
            # node 1: the two strongest of three edges, strongest first.
            (1, 0, "avg_pool_3x3"): 1.0,
            (1, 1, "sep_conv_3x3"): 2.0,
            (1, 2, "skip_connect"): 4.0,
            # node 3: input 4 (node 2) is the strongest.
            (3, 4, "dil_conv_5x5"): 5.0,
            (3, 2, "sep_conv_3x3"): 4.0,
        }
    )
    gt = derive_genotype(a, a)
    assert gt.normal[:2] == (("dil_conv_3x3", 1), ("sep_conv_5x5", 0))
    assert gt.normal[2:4] == (("skip_connect", 2), ("sep_conv_3x3", 1))
    assert gt.normal[6:] == (("dil_conv_5x5", 4), ("sep_conv_3x3", 2))
    assert all(op != "none" for op, _ in gt.normal + gt.reduce)


def test_two_edges_come_from_distinct_predecessors():
    # Input 0's edge holds the two largest op weights of node 1; only one edge per input is kept.
    a = _alpha(
        {
            (1, 0, "sep_conv_3x3"): 5.0,
            (1, 0, "sep_conv_5x5"): 4.9,
            (1, 1, "dil_conv_3x3"): 2.0,
            (1, 2, "max_pool_3x3"): 1.0,
        }
    )
    assert derive_genotype(a, a).normal[2:4] == (("sep_conv_3x3", 0), ("dil_conv_3x3", 1))


def test_beta_edge_normalization_changes_the_choice():
    a = _alpha(
        {
            (1, 0, "max_pool_3x3"): 3.0,
            (1, 1, "avg_pool_3x3"): 2.5,
            (1, 2, "skip_connect"): 2.0,
        }
    )
    assert derive_genotype(a, a).normal[2:4] == (("max_pool_3x3", 0), ("avg_pool_3x3", 1))
    beta = np.zeros(14)
    beta[edge_index(1, 2)] = 3.0
    gt = derive_genotype(a, a, beta_normal=beta)
    assert gt.normal[2:4] == (("skip_connect", 2), ("max_pool_3x3", 0))
    assert gt.reduce[2:4] == (("max_pool_3x3", 0), ("avg_pool_3x3", 1))  # no beta_reduce
    # Uniform β only rescales each node's edges equally: no change.
    assert derive_genotype(
        a, a, beta_normal=np.ones(14), beta_reduce=np.ones(14)
    ) == derive_genotype(a, a)


def test_per_edge_op_lists():
    # P-DARTS final stage: each edge keeps its own small op set; α is ragged.
    ops = [("none", "sep_conv_3x3", "skip_connect")] * 14
    ops[0] = ("dil_conv_5x5", "avg_pool_3x3")
    ops[1] = ("none", "max_pool_3x3", "sep_conv_5x5", "dil_conv_3x3")
    alpha = [np.zeros(len(o)) for o in ops]
    alpha[0] = np.array([0.0, 1.0])  # avg_pool_3x3
    alpha[1] = np.array([5.0, 0.0, 0.0, 2.0])  # dil_conv_3x3, 'none' ignored
    gt = derive_genotype(alpha, alpha, ops=ops)
    assert gt.normal[:2] == (("avg_pool_3x3", 0), ("dil_conv_3x3", 1))
    assert gt.normal[2:] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)) * 3

    # Same-width per-edge lists also take a plain 2-D array.
    ops2 = [("none", "skip_connect", "sep_conv_3x3")] * 14
    a2 = np.zeros((14, 3))
    a2[:, 1] = 1.0
    assert (
        derive_genotype(a2, a2, ops=ops2).normal == (("skip_connect", 0), ("skip_connect", 1)) * 4
    )


def test_skip_connect_cap():
    # 2 steps (5 edges): e0..e3 prefer skip_connect with falling weights, e4 prefers sep_conv_3x3.
    a = _alpha(
        {
            (0, 0, "skip_connect"): 4.0,
            (0, 1, "skip_connect"): 3.0,
            (1, 0, "skip_connect"): 2.0,
            (1, 1, "skip_connect"): 1.0,
            (1, 2, "sep_conv_3x3"): 0.5,
        },
        steps=2,
    )
    uncapped = derive_genotype(a, a, steps=2, multiplier=2)
    assert uncapped.normal == (("skip_connect", 0), ("skip_connect", 1)) * 2
    assert uncapped.normal_concat == (2, 3)

    capped = derive_genotype(a, a, steps=2, multiplier=2, max_skip_normal=2)
    # The two weakest kept skips (e3, then e2) are excluded; node 1 re-picks its edges.
    assert capped.normal == (
        ("skip_connect", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 2),
        ("max_pool_3x3", 1),
    )
    assert capped.reduce == uncapped.reduce  # the reduction cell is not capped

    none_left = derive_genotype(a, a, steps=2, multiplier=2, max_skip_normal=0)
    assert all(op != "skip_connect" for op, _ in none_left.normal)
    assert derive_genotype(a, a, steps=2, multiplier=2, max_skip_normal=4) == uncapped


def test_skip_connect_cap_keeps_a_skip_its_node_needs():
    # 2 steps, pruned per-edge op lists: node 0's edge e1 has only `none` and a skip,
    # so excluding that skip would leave node 0 one edge to keep: the cap keeps it.
    ops = [
        ("sep_conv_3x3", "skip_connect"),
        ("none", "skip_connect"),
        ("max_pool_3x3", "skip_connect"),
        ("sep_conv_3x3", "skip_connect"),
        ("sep_conv_3x3", "skip_connect"),
    ]
    alpha = np.array([[0.0, 1.0], [0.0, 0.5], [0.0, 0.2], [0.0, 3.0], [1.0, 0.0]])
    uncapped = derive_genotype(alpha, alpha, ops=ops, steps=2, multiplier=2)
    assert uncapped.normal == (
        ("skip_connect", 0),
        ("skip_connect", 1),
        ("skip_connect", 1),
        ("sep_conv_3x3", 2),
    )
    # Cap 2: the weakest kept skip is e1's, which node 0 needs; e0's goes instead.
    capped = derive_genotype(alpha, alpha, ops=ops, steps=2, multiplier=2, max_skip_normal=2)
    assert capped.normal == (
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 2),
    )
    # Cap 0: every skip goes but e1's (node 1 falls back to e2's max-pool).
    capped = derive_genotype(alpha, alpha, ops=ops, steps=2, multiplier=2, max_skip_normal=0)
    assert capped.normal == (
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 2),
        ("max_pool_3x3", 0),
    )


def test_multiplier_sets_concat():
    gt = derive_genotype(np.zeros((14, 8)), np.zeros((14, 8)), multiplier=2)
    assert gt.normal_concat == (4, 5) and gt.reduce_concat == (4, 5)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(alpha_normal=np.zeros((13, 8))), r"alpha_normal has 13 rows; expected 14"),
        (
            dict(alpha_reduce=np.zeros((14, 7))),
            r"alpha_reduce row 0 \(edge 0 -> node 0\).*expected \(8,\)",
        ),
        (dict(alpha_normal=np.zeros(14)), r"alpha_normal must be a 2-D array"),
        (dict(alpha_normal=np.full((14, 8), np.nan)), r"alpha_normal row 0 .*non-finite"),
        (dict(beta_normal=np.zeros(13)), r"beta_normal must have shape \(14,\)"),
        (dict(ops=DARTS_OPS + ("conv_7x7",)), r"ops has unknown op 'conv_7x7'"),
        (dict(ops=[DARTS_OPS] * 13), r"per-edge ops has 13 entries; expected 14"),
        (
            dict(
                ops=[("none",)] * 14,
                alpha_normal=np.zeros((14, 1)),
                alpha_reduce=np.zeros((14, 1)),
            ),
            r"normal cell: intermediate node 0",
        ),
        (dict(multiplier=5), r"multiplier must be an integer in 1\.\.steps=4"),
        (dict(max_skip_normal=-1), r"max_skip_normal must be None or a non-negative integer"),
    ],
)
def test_derive_validates_inputs(kwargs, pattern):
    args = dict(alpha_normal=np.zeros((14, 8)), alpha_reduce=np.zeros((14, 8)))
    args.update(kwargs)
    with pytest.raises(GenotypeError, match=pattern):
        derive_genotype(args.pop("alpha_normal"), args.pop("alpha_reduce"), **args)


def test_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, il_tf.spaces.genotypes, il_tf.spaces.drawing; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
