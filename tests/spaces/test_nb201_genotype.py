"""Tests of the NAS-Bench-201 cell type (no table, no TensorFlow needed)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from il_tf.spaces import nb201_genotype as nbg
from il_tf.spaces.nb201_genotype import (
    NB201_EDGES,
    NB201_NUM_EDGES,
    NB201_OPS,
    NB201Genotype,
    NB201GenotypeError,
    all_nb201_genotypes,
    derive_nb201_genotype,
    nb201_edge,
)

DRNAS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


def test_constants_and_edge_order():
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert NB201_NUM_EDGES == 6
    assert NB201_EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert [nb201_edge(i) for i in range(6)] == list(NB201_EDGES)
    # The order of the benchmark's search code: sorted "i<-j" edge names.
    assert sorted(f"{t}<-{f}" for t, f in NB201_EDGES) == [f"{t}<-{f}" for t, f in NB201_EDGES]
    for bad in (-1, 6, 1.0, True):
        with pytest.raises(NB201GenotypeError, match="edge index"):
            nb201_edge(bad)


def test_arch_string_layout():
    ops = ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3")
    g = NB201Genotype((*ops, "nor_conv_3x3"))
    assert g.to_arch_string() == DRNAS
    assert str(g) == DRNAS
    assert NB201Genotype.from_arch_string(DRNAS) == g
    assert g.edges()[3] == (3, 0, "skip_connect")
    assert g.op_indices() == (3, 3, 3, 1, 3, 3)
    assert NB201Genotype.space == "nas-bench-201"
    # Lists are accepted and stored as a tuple (hashable, immutable).
    assert NB201Genotype(list(g.ops)) == g and hash(NB201Genotype(list(g.ops))) == hash(g)


def test_all_genotypes_round_trip():
    genos = list(all_nb201_genotypes())
    assert len(genos) == 5**6 == 15625
    strings = [g.to_arch_string() for g in genos]
    assert len(set(strings)) == 15625
    assert all(NB201Genotype.from_arch_string(s) == g for s, g in zip(strings, genos, strict=True))
    assert genos[0].ops == ("none",) * 6 and genos[-1].ops == ("avg_pool_3x3",) * 6


def test_json_round_trip():
    g = NB201Genotype.from_arch_string(DRNAS)
    d = g.to_json_dict()
    assert d == {"format": "il_tf.genotype/v1", "space": "nas-bench-201", "arch": DRNAS}
    assert NB201Genotype.from_json_dict(json.loads(json.dumps(d))) == g
    assert NB201Genotype.from_json_dict({**d, "note": "extra keys are ignored"}) == g


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ([], "must be a JSON object"),
        ({"space": "nas-bench-201", "arch": DRNAS}, "missing the 'format' field"),
        ({"format": "il_tf.genotype/v1", "arch": DRNAS}, "missing the 'space' field"),
        ({"format": "il_tf.genotype/v1", "space": "nas-bench-201"}, "missing the 'arch' field"),
        (
            {"format": "il_tf.genotype/v2", "space": "nas-bench-201", "arch": DRNAS},
            "format 'il_tf.genotype/v2'",
        ),
        ({"format": "il_tf.genotype/v1", "space": "darts", "arch": DRNAS}, "search space 'darts'"),
        ({"format": "il_tf.genotype/v1", "space": "nas-bench-201", "arch": 3}, "must be a str"),
        ({"format": "il_tf.genotype/v1", "space": "nas-bench-201", "arch": "|x~0|"}, "groups"),
    ],
)
def test_json_errors(record, match):
    with pytest.raises(NB201GenotypeError, match=match):
        NB201Genotype.from_json_dict(record)


@pytest.mark.parametrize(
    ("arch", "match"),
    [
        ("", r"found 1 '\+'-separated groups, expected 3"),
        ("|none~0|+|none~0|none~1|", r"found 2 '\+'-separated groups, expected 3"),
        (DRNAS + "+|none~0|", r"found 4 '\+'-separated groups"),
        (
            "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
            r"group 1 .* must start and end with '\|'",
        ),
        (
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2",
            r"group 3 .* must start and end with '\|'",
        ),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", r"group 2 .* has 1 edges, expected 2"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|none~3|", r"has 4 edges, expected 3"),
        (
            "|none~0|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
            r"group 1 .* has 2 edges, expected 1",
        ),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", r"token 'none' .* not of the form op~0"),
        (
            "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|",
            r"token 'none~0' .* input index ~0, expected ~1",
        ),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", r"edge 1<-0"),
        (
            "|none~0|+|none~0|none~1|+|none~0|none~1|conv_3x3~2|",
            r"token 'conv_3x3~2' .* unknown op 'conv_3x3'",
        ),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|max_pool_3x3~2|", r"unknown op 'max_pool_3x3'"),
        (" " + DRNAS, r"must start and end with"),
        (DRNAS.replace("~0|+", "~0| +", 1), r"must start and end with"),
        ("|~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"unknown op ''"),
    ],
)
def test_malformed_arch_strings(arch, match):
    with pytest.raises(NB201GenotypeError, match=match) as info:
        NB201Genotype.from_arch_string(arch)
    msg = str(info.value)
    assert repr(arch) in msg  # names the whole string...
    assert "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in msg  # ...the expected form...
    assert ", ".join(NB201_OPS) in msg  # ...and the allowed ops.
    assert isinstance(info.value, ValueError)


def test_arch_string_must_be_str():
    with pytest.raises(NB201GenotypeError, match="must be a str, got bytes"):
        NB201Genotype.from_arch_string(DRNAS.encode())


def test_constructor_validation():
    with pytest.raises(NB201GenotypeError, match="needs 6 ops"):
        NB201Genotype(("none",) * 5)
    with pytest.raises(
        NB201GenotypeError, match=r"unknown op 'sep_conv_3x3' on edge 2 \(2<-1\); allowed ops: none"
    ):
        NB201Genotype(("none", "none", "sep_conv_3x3", "none", "none", "none"))
    with pytest.raises(NB201GenotypeError, match="sequence of 6 op names"):
        NB201Genotype("none")  # type: ignore[arg-type]


def test_derive_from_hand_made_alpha():
    alpha = np.zeros((6, 5), np.float32)
    target = (
        "nor_conv_3x3",
        "skip_connect",
        "none",
        "avg_pool_3x3",
        "nor_conv_1x1",
        "nor_conv_3x3",
    )
    for e, op in enumerate(target):
        alpha[e, NB201_OPS.index(op)] = 1.0 + 0.1 * e
    alpha[2, 0] = 0.5  # `none` wins edge 2<-1 by a small margin over all other ops
    alpha[2, 1:] = 0.49
    g = derive_nb201_genotype(alpha)
    assert g.ops == target
    assert derive_nb201_genotype(alpha.tolist()) == g  # nested lists work too
    # Softmax is monotonic: the argmax of softmax equals the argmax of the logits.
    soft = np.exp(alpha) / np.exp(alpha).sum(1, keepdims=True)
    assert derive_nb201_genotype(np.log(soft)) == g
    # Ties go to the earlier op: a zero initialisation derives all `none`.
    assert derive_nb201_genotype(np.zeros((6, 5))).ops == ("none",) * 6


def test_derive_validation():
    with pytest.raises(NB201GenotypeError, match=r"shape \(6, 5\).*got shape \(5, 6\)"):
        derive_nb201_genotype(np.zeros((5, 6)))
    with pytest.raises(NB201GenotypeError, match=r"got shape \(30,\)"):
        derive_nb201_genotype(np.zeros(30))
    bad = np.zeros((6, 5))
    bad[4, 2] = np.nan
    with pytest.raises(NB201GenotypeError, match=r"non-finite .* edge\(s\) \[4\]"):
        derive_nb201_genotype(bad)
    with pytest.raises(NB201GenotypeError, match="numeric array"):
        derive_nb201_genotype([["a"] * 5] * 6)


def test_module_does_not_import_tensorflow():
    roots = set()
    for node in ast.walk(ast.parse(Path(nbg.__file__).read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & {"tensorflow", "keras"}, roots


def test_exclude_none_derivation_never_picks_none():
    from il_tf.spaces.nb201_genotype import NB201GenotypeError, derive_nb201_genotype

    alpha = np.zeros((6, 5))
    alpha[:, 0] = 5.0  # none leads on every edge
    alpha[:, 3] = 1.0  # then nor_conv_3x3
    assert set(derive_nb201_genotype(alpha).ops) == {"none"}
    assert set(derive_nb201_genotype(alpha, "exclude_none").ops) == {"nor_conv_3x3"}
    with pytest.raises(NB201GenotypeError, match="unknown derivation 'max'"):
        derive_nb201_genotype(alpha, "max")
