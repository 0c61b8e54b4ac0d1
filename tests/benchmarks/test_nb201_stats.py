"""The NAS-Bench-201 study's statistics, partitions and collapse flags."""

import math

import pytest

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
    ]:
        with pytest.raises(st.PartitionError, match=msg):
            st.parse_partition(bad)


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


def test_cell_flags():
    disconnected = "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_3x3~1|none~2|"
    assert st.cell_flags(disconnected)["disconnected"]
    skip = "|skip_connect~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|"
    f = st.cell_flags(skip)
    assert f == {"parameter_free": True, "skip_dominated": True, "disconnected": False}
    good = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert not any(st.cell_flags(good).values())


def _record(acc, cell):
    return {"nb201": {"cifar10_test": acc}, "alpha": {"cell": cell}}


def test_trajectory_finds_degradation_and_the_drift_of_the_mass():
    ops = ("none", "skip_connect", "nor_conv_3x3")
    uniform = [[0.0, 0.0, 0.0]] * 2
    to_none = [[math.log(2.0), 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]
    t = st.trajectory([_record(93.0, uniform), _record(94.0, uniform), _record(75.0, to_none)], ops)
    assert t["best"] == 94.0 and t["final"] == 75.0 and t["degraded"]
    assert t["cifar10_test_per_epoch"] == [93.0, 94.0, 75.0]
    assert t["mass_first"] == pytest.approx({op: 1 / 3 for op in ops})
    assert t["mass_last"] == pytest.approx(
        {"none": 0.5, "skip_connect": 0.25, "nor_conv_3x3": 0.25}
    )
    # Less than a point below the best is not a degradation.
    assert not st.trajectory([_record(93.0, uniform), _record(92.5, uniform)], ops)["degraded"]
    with pytest.raises(ValueError, match="at least one epoch"):
        st.trajectory([], ops)
