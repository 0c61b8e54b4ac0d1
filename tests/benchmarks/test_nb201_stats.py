"""The NAS-Bench-201 study's statistics, partitions, collapse flags and paired report."""

import itertools
import json
import math

import pytest
from scipy import stats

from benchmarks import nb201_report as rep
from benchmarks import nb201_stats as st


def test_partition_parses_and_validates():
    assert st.parse_partition("0,1,2,3,4/5,6,7,8,9") == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert st.parse_partition("0,2,4/1,3/5,6,7") == ((0, 2, 4), (1, 3), (5, 6, 7))
    for bad, msg in [
        ("0,1/1,2", r"classes \[1\] are in more than one"),
        ("0,1/", "learner 1 has no classes"),
        ("0,10/1,2", r"classes \[10\] are outside 0..9"),
        ("0,x/1,2", "non-integer"),
        ("0/1,2", "at least 2 classes"),
        ("random:x", "the seed after 'random:' must be an int >= 0"),
        ("random:-1", "the seed after 'random:' must be an int >= 0"),
    ]:
        with pytest.raises(st.PartitionError, match=msg):
            st.resolve_partition(bad)


def test_random_partition_is_balanced_and_fixed_by_its_seed():
    a, b = st.resolve_partition("random:1")
    assert len(a) == len(b) == 5 and sorted(a + b) == list(range(10))
    assert list(a) == sorted(a) and list(b) == sorted(b)
    assert st.resolve_partition("random:1") == (a, b)
    assert len({st.resolve_partition(f"random:{s}") for s in range(1, 8)}) > 1
    assert st.partition_text((a, b)) == ",".join(map(str, a)) + "/" + ",".join(map(str, b))
    assert st.parse_partition(st.partition_text((a, b))) == (a, b)


def test_welch_matches_a_hand_computation():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    r = st.welch_test(a, b)
    va, vb = (5 / 3) / 4, 10 / 5
    assert math.isclose(r["t"], (2.5 - 6) / math.sqrt(va + vb))
    assert math.isclose(r["df"], (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4))
    assert r["p"] == pytest.approx(0.06913359319239237)  # scipy ttest_ind(equal_var=False)
    assert st.welch_test([1.0], b) is None


def test_interval_covers_the_mean_with_the_t_quantile():
    s = st.mean_std_ci([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0
    half = 4.302652729911275 / math.sqrt(3)  # t_0.975 with 2 df
    assert s["ci95"] == pytest.approx((2 - half, 2 + half))
    assert st.mean_std_ci([5.0])["ci95"] is None


def _exact_wilcoxon_p(diffs):
    """Two-sided exact p of the signed-rank test by enumerating every sign pattern (no ties,
    no zeros): the share of patterns whose smaller rank sum is at most the observed one."""
    ranks = {abs(d): r for r, d in enumerate(sorted(diffs, key=abs), 1)}
    minus = sum(ranks[abs(d)] for d in diffs if d < 0)
    plus = sum(ranks.values()) - minus
    observed = min(plus, minus)
    n = len(diffs)
    hits = 0
    for signs in itertools.product((0, 1), repeat=n):
        s = sum(r for r, neg in zip(range(1, n + 1), signs, strict=True) if neg)
        hits += min(s, n * (n + 1) // 2 - s) <= observed
    return hits / 2**n


def test_paired_comparison_by_hand():
    # Seed 9 is only in a: it is left out of the pairing.
    a = {0: 93.0, 1: 91.0, 2: 92.5, 3: 90.0, 4: 94.0, 9: 50.0}
    b = {0: 92.0, 1: 91.5, 2: 90.0, 3: 87.0, 4: 90.0}
    r = st.paired_comparison(a, b)
    diffs = [1.0, -0.5, 2.5, 3.0, 4.0]
    assert r["seeds"] == [0, 1, 2, 3, 4] and r["differences"] == diffs and r["n"] == 5
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    assert r["mean"] == pytest.approx(mean) and r["std"] == pytest.approx(sd)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert r["ci95"] == pytest.approx((mean - half, mean + half))
    t = mean / (sd / math.sqrt(5))
    assert r["t"] == pytest.approx(t)
    assert r["p_t"] == pytest.approx(2 * stats.t.sf(t, 4))
    # Ranks of |d|: 0.5→1, 1→2, 2.5→3, 3→4, 4→5; the negative one has rank 1: W = 1,
    # and 2 of the 32 sign patterns have a smaller rank sum ≤ 1 on either side: p = 4/32.
    assert r["w"] == 1.0
    assert r["p_wilcoxon"] == pytest.approx(4 / 32) == _exact_wilcoxon_p(diffs)


def test_paired_comparison_edge_cases():
    same = st.paired_comparison({0: 90.0, 1: 91.0}, {0: 90.0, 1: 91.0})
    assert same["differences"] == [0.0, 0.0] and same["p_t"] == 1.0 and same["p_wilcoxon"] == 1.0
    shifted = st.paired_comparison({0: 91.0, 1: 92.0, 2: 93.0}, {0: 90.0, 1: 91.0, 2: 92.0})
    assert shifted["t"] == math.inf and shifted["p_t"] == 0.0
    assert shifted["p_wilcoxon"] == pytest.approx(2 / 8)  # all 3 positive, exact
    one = st.paired_comparison({0: 91.0, 1: 80.0}, {0: 90.0})
    assert one["n"] == 1 and one["p_t"] is None and one["p_wilcoxon"] is None
    none = st.paired_comparison({0: 91.0}, {1: 90.0})
    assert none["n"] == 0 and none["mean"] is None


def test_cell_flags():
    disconnected = "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"
    assert st.cell_flags(disconnected)["disconnected"]
    skip = "|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|"
    f = st.cell_flags(skip)
    assert f == {"parameter_free": True, "skip_dominated": True, "disconnected": False}
    good = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert not any(st.cell_flags(good).values())


def test_entropy_and_mass_of_the_edges():
    ops = ("none", "skip_connect", "nor_conv_3x3")
    uniform = [[0.0, 0.0, 0.0]] * 2
    assert st.edge_entropy(uniform) == pytest.approx(math.log(3))
    # One edge uniform, one with probabilities (1/2, 1/4, 1/4).
    mixed = [[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert st.edge_entropy(mixed) == pytest.approx((math.log(3) + h) / 2)
    assert st.edge_entropy([[1000.0, 0.0, 0.0]]) == pytest.approx(0.0, abs=1e-12)
    assert st.op_mass(mixed, ops) == pytest.approx(
        {
            "none": (1 / 3 + 0.5) / 2,
            "skip_connect": (1 / 3 + 0.25) / 2,
            "nor_conv_3x3": (1 / 3 + 0.25) / 2,
        }
    )


CELL_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
CELL_B = "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"


def _epoch(e, acc, entropy, arch=CELL_A, none=0.2, skip=0.2):
    rule = {"arch": arch, "cifar10_test": acc}
    mass = {"none": none, "skip_connect": skip, "nor_conv_1x1": 0.2, "nor_conv_3x3": 0.2,
            "avg_pool_3x3": 0.2}  # fmt: skip
    return {"epoch": e, "entropy": entropy, "mass": mass, "argmax": rule, "exclude_none": rule}


def test_trajectory_finds_degradation_the_drift_and_a_late_change():
    ln5 = math.log(5)
    epochs = [_epoch(1, 93.0, 1.6), _epoch(2, 94.0, 1.2), _epoch(3, 93.5, 1.0),
              _epoch(4, 75.0, 0.7, CELL_B, none=0.5, skip=0.1)]  # fmt: skip
    t = st.trajectory(epochs)
    assert t["best"] == 94.0 and t["final"] == 75.0 and t["degraded"]
    assert t["cifar10_test_per_epoch"] == [93.0, 94.0, 93.5, 75.0]
    assert t["quarter_epoch"] == 1 and t["changed_after_quarter"]
    assert t["entropy_first"] == 1.6 and t["entropy_last"] == 0.7
    assert t["entropy_ratio"] == pytest.approx(0.7 / ln5) and t["entropy_halved"]
    assert t["mass_first"]["none"] == 0.2 and t["mass_last"]["none"] == 0.5
    # Less than a point below the best is not a degradation; the same cell is no change.
    flat = st.trajectory([_epoch(1, 93.0, 1.6), _epoch(2, 92.5, 1.5)])
    assert not flat["degraded"] and not flat["changed_after_quarter"]
    assert not flat["entropy_halved"]
    assert st.quarter_epoch(10) == 2 and st.quarter_epoch(20) == 5 and st.quarter_epoch(3) == 1
    with pytest.raises(ValueError, match="at least one epoch"):
        st.trajectory([])


def test_alpha_moved_needs_both_the_entropy_and_late_changes():
    late = [_epoch(e, 90.0, 1.6 - 0.25 * e) for e in range(1, 4)] + [_epoch(4, 90.0, 0.5, CELL_B)]
    frozen = [_epoch(e, 90.0, 1.6 - 0.25 * e) for e in range(1, 4)] + [_epoch(4, 90.0, 0.5)]
    v = st.alpha_moved([{"epochs": late}, {"epochs": late}, {"epochs": frozen}])
    assert v["runs"] == 3 and v["changed_after_quarter"] == 2 and v["entropy_halved"] == 3
    assert v["entropy_ratio"] == pytest.approx(0.5 / math.log(5)) and v["moved"]
    assert not st.alpha_moved([{"epochs": late}, {"epochs": frozen}])["moved"]  # 1 of 2
    slow = [_epoch(1, 90.0, 1.6), _epoch(2, 90.0, 1.5, CELL_B)]
    assert not st.alpha_moved([{"epochs": slow}])["moved"]  # entropy not halved


def test_random_search_reference_exactly():
    # Best valid of 2 draws from 3 cells: P(cell 3) = 1 - (2/3)^2 = 5/9, P(cell 2) = 3/9.
    r = st.random_search_reference([1.0, 2.0, 3.0], [10.0, 20.0, 30.0], 2)
    mean = (1 * 10 + 3 * 20 + 5 * 30) / 9
    assert r["mean"] == pytest.approx(mean)
    assert r["std"] == pytest.approx(math.sqrt((100 + 3 * 400 + 5 * 900) / 9 - mean**2))
    # One draw: the plain mean and (population) std of the test values.
    one = st.random_search_reference([3.0, 1.0, 2.0], [30.0, 10.0, 20.0], 1)
    assert one["mean"] == pytest.approx(20.0) and one["std"] == pytest.approx(math.sqrt(200 / 3))
    # Tied valid values: the kept cell is either of them, equally likely.
    tied = st.random_search_reference([1.0, 1.0, 2.0], [10.0, 20.0, 30.0], 2)
    assert tied["mean"] == pytest.approx((4 * 15 + 5 * 30) / 9)
    with pytest.raises(ValueError, match="n >= 1"):
        st.random_search_reference([1.0], [1.0], 0)


def _row(variant, seed, c10, c10_ex, epochs, seconds=100.0):
    def rule(acc, arch):
        return {"arch": arch, "cifar10_test": acc, "cifar100_test": acc - 20,
                "imagenet16_test": acc - 50, **st.cell_flags(arch)}  # fmt: skip

    arch = CELL_B if c10 == 10.0 else CELL_A
    return {"variant": variant, "seed": seed, "setting": {"epochs": len(epochs)},
            "argmax": rule(c10, arch), "exclude_none": rule(c10_ex, CELL_A), "epochs": epochs,
            "seconds": seconds, "cpu_seconds": 2 * seconds}  # fmt: skip


def test_summary_and_paired_report_from_a_synthetic_runs_file(tmp_path):
    moving = [_epoch(e, 92.0, 1.6 - 0.3 * e) for e in range(1, 4)] + [
        _epoch(4, 91.0, 0.4, CELL_B, none=0.4)
    ]
    still = [_epoch(e, 92.0, 1.6) for e in range(1, 5)]
    darts = [90.0, 10.0, 91.0, 88.0]
    il = [92.0, 91.0, 91.5, 93.0]
    il_fo = [92.0, 90.0, 92.5, 90.0]
    lines = [
        *(_row("darts_2nd", s, v, v + 2, moving, 100.0) for s, v in enumerate(darts)),
        *(_row("il_chain", s, v, v, still, 300.0) for s, v in enumerate(il)),
        *(_row("il_first_order", s, v, v + 0.5, still) for s, v in enumerate(il_fo)),
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_variant = {v: [r for r in rows if r["variant"] == v]
                  for v in ("darts_2nd", "il_chain", "il_first_order")}  # fmt: skip

    summary = st.summarize(by_variant)
    assert [(e["variant"], e["derivation"]) for e in summary] == [
        (v, rule) for v in by_variant for rule in ("argmax", "exclude_none")
    ]
    d_arg = summary[0]
    assert d_arg["runs"] == 4 and d_arg["cifar10_test"]["mean"] == pytest.approx(279 / 4)
    assert d_arg["cifar10_test"]["std"] == pytest.approx(stats.tstd(darts))
    assert d_arg["disconnected"] == 1 and d_arg["degraded"] == 4
    assert d_arg["final_minus_best"] == -1.0
    assert d_arg["changed_after_quarter"] == 4 and d_arg["entropy_halved"] == 4
    assert d_arg["entropy"] == pytest.approx([1.3, 0.4])
    assert d_arg["mass"]["none"] == pytest.approx([0.2, 0.4])
    assert d_arg["seconds"] == 100.0 and d_arg["cpu_seconds"] == 200.0
    assert summary[1]["cifar10_test"]["mean"] == pytest.approx(279 / 4 + 2)

    comparisons = st.pairs(by_variant)
    assert [(c["a"], c["b"], c["derivation"]) for c in comparisons] == [
        (a, b, rule)
        for a, b in (
            ("darts_2nd", "il_chain"),
            ("darts_2nd", "il_first_order"),
            ("il_chain", "il_first_order"),
        )
        for rule in ("argmax", "exclude_none")
    ]
    c = comparisons[0]
    diffs = [d - i for d, i in zip(darts, il, strict=True)]
    assert c["differences"] == diffs and c["n"] == 4
    assert c["p_t"] == pytest.approx(stats.ttest_rel(darts, il).pvalue)
    assert c["p_wilcoxon"] == pytest.approx(_exact_wilcoxon_p(diffs))
    # darts −2 on the exclude_none rule: differences all shifted by 2.
    assert comparisons[1]["differences"] == [d + 2 for d in diffs]
    ilc = comparisons[4]  # il_chain − il_first_order, argmax
    assert ilc["differences"] == [0.0, 1.0, -1.0, 3.0]
    # The zero difference is dropped: ranks of 1, 1, 3 → ties, W- = 1.5 of 6.
    assert ilc["p_wilcoxon"] == pytest.approx(stats.wilcoxon([1.0, -1.0, 3.0]).pvalue)

    text = rep.study_report("cmd", summary, comparisons, by_variant, [
        {"n": 10, **{f: {"mean": 93.0, "std": 1.0} for f in st.FIELDS}}
    ])  # fmt: skip
    lo, hi = c["ci95"]
    assert (
        f"| darts_2nd − il_chain | argmax | 4 | -2.00, -81.00, -0.50, -5.00 | "
        f"{c['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {c['p_t']:.3g} | {c['p_wilcoxon']:.3g} |"
    ) in text
    assert "| 1 | 10.00 / 12.00 (disc.) | 91.00 / 91.00 | 90.00 / 90.50 |" in text
    assert "| darts_2nd | argmax | 4 | 69.75 ± " in text
    assert "| 0 / 0 / 1 | 4 (-1.00) | 4 | 1.300 → 0.400 (4) | 0.200 → 0.400 | " in text
    assert (
        "| random search, 10 look-ups (expected) | best CIFAR-10 valid | | 93.00 ± 1.00 |" in text
    )
    assert "| DrNAS (published) |" in text
    assert f"- il_chain (argmax): `{CELL_A}`" in text

    verdict = st.alpha_moved(by_variant["darts_2nd"])
    calib = rep.calibration_table([{"variant": "darts_2nd", "verdict": verdict, "seconds": 100.0,
        "setting": {"arch_lr": 0.01, "epochs": 4, "iterations_per_epoch": 50}}])  # fmt: skip
    assert (
        "| darts_2nd | 0.01 | 4 × 50 | 4 | 0.25 (0.25, 0.25, 0.25, 0.25) | 4 | 4 (4) | yes |"
        in (calib)
    )
