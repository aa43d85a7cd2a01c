"""Update schedules: which steps update (1-based, pinned), drop-fraction decays, cubic GMP, Mx scaling."""

import math

import pytest

from sparsecl.registry import UnknownNameError
from sparsecl.sparse.config import SparsityConfig
from sparsecl.sparse.schedule import DROP_SCHEDULES, UpdateSchedule, cubic_sparsity


def test_update_steps_are_one_based_multiples_up_to_t_end():
    s = UpdateSchedule.from_config(SparsityConfig(method="rigl", density=0.5, delta_t=2, t_end=0.5), 20)
    assert (s.begin_step, s.end_step) == (0, 10)
    assert s.update_steps(20) == [2, 4, 6, 8, 10]  # t counts from 1: never at step 0, never after T_end
    assert not s.is_update(0)


def test_begin_fraction_delays_the_first_update():
    s = UpdateSchedule.from_config(SparsityConfig(method="set", density=0.5, delta_t=2, begin=0.3, t_end=0.5), 20)
    assert s.update_steps(20) == [6, 8, 10]


def test_reference_defaults_and_mx_scaling():
    cfg = SparsityConfig(method="rigl", density=0.1)
    one, five = UpdateSchedule.from_config(cfg, 1000), UpdateSchedule.from_config(cfg, 5000)
    assert (one.delta_t, one.end_step, one.drop_fraction, one.decay) == (100, 750, 0.3, "cosine")
    assert (five.delta_t, five.end_step) == (100, 3750)  # RigL_5x: T_end scales, delta_T stays
    assert one.update_steps(1000) == list(range(100, 701, 100))
    assert five.update_steps(5000) == list(range(100, 3701, 100))


@pytest.mark.parametrize("decay, t, expected", [
    ("cosine", 0, 0.3), ("cosine", 375, 0.15), ("cosine", 750, 0.0),
    ("cosine", 250, 0.15 * (1 + math.cos(math.pi / 3))),
    ("linear", 375, 0.15), ("linear", 600, 0.3 * 0.2), ("constant", 700, 0.3),
])
def test_drop_fraction_decays(decay, t, expected):
    s = UpdateSchedule(0, 750, 100, 0.3, decay)
    assert s.fraction(t) == pytest.approx(expected, abs=1e-12)


def test_cubic_sparsity_follows_zhu_gupta():
    assert cubic_sparsity(0, 0.0, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(10, 0.0, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(60, 0.0, 0.9, 10, 110) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert cubic_sparsity(35, 0.2, 0.9, 10, 110) == pytest.approx(0.9 + (0.2 - 0.9) * 0.75**3)
    assert cubic_sparsity(110, 0.0, 0.9, 10, 110) == 0.9
    assert cubic_sparsity(500, 0.0, 0.9, 10, 110) == 0.9


def test_unknown_drop_schedule_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid: constant, cosine, linear"):
        DROP_SCHEDULES.get("step")
    with pytest.raises(ValueError, match="drop_schedule='step' is not valid; choose one of: constant, cosine, linear"):
        SparsityConfig(method="rigl", density=0.5, drop_schedule="step")
