import pytest

from il_tf.learning.stage_schedule import make_schedule


def test_interleaved_blocked_joint_stages():
    inter = make_schedule(3, 2, "interleaved")
    assert [s.learners for s in inter.stages] == [(0,), (1,), (2,), (0,), (1,), (2,)]
    assert inter.last_stage == (3, 4, 5)
    blocked = make_schedule(3, 2, "blocked")
    assert [s.learners for s in blocked.stages] == [(0,), (0,), (1,), (1,), (2,), (2,)]
    assert blocked.last_stage == (1, 3, 5)
    joint = make_schedule(3, 2, "joint")
    assert [s.learners for s in joint.stages] == [(0, 1, 2), (0, 1, 2)]
    assert joint.last_stage == (1, 1, 1)


def test_darts_is_one_learner_one_round():
    s = make_schedule(1, 1)
    assert [st.learners for st in s.stages] == [(0,)]
    assert s.num_steps == 1


def test_order_steps_and_batches():
    s = make_schedule(2, 2, "interleaved", steps_per_stage=3, order=[1, 0])
    assert [st.learners for st in s.stages] == [(1,), (0,), (1,), (0,)]
    assert s.num_steps == 12
    assert s.batches_per_iteration(0) == 6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_learners": 0, "rounds": 1}, "at least one learner"),
        ({"num_learners": 2, "rounds": 0}, "rounds (R) must be >= 1, got 0"),
        ({"num_learners": 2, "rounds": 1, "steps_per_stage": 0}, "steps_per_stage (T)"),
        ({"num_learners": 2, "rounds": 1, "kind": "random"}, "unknown schedule 'random'"),
        ({"num_learners": 2, "rounds": 1, "order": [0, 0]}, "must be a permutation"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError) as e:
        make_schedule(**kwargs)
    assert message in str(e.value)
