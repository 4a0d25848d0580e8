"""Candidate strategies: DYCORS's constants, the merit, the duplicate filter, pending points."""
import math

import numpy as np
import pytest

from gp_loss.errors import GpLossError
from gp_loss.hps.candidates import fresh, fresh_candidates, perturb
from gp_loss.hps.space import Box
from gp_loss.hps.strategies import (DYCORS, RADIUS_MAX, RADIUS_MIN, STRATEGIES, WEIGHTS, Context,
                                    make_strategy, perturbation_probability)
from gp_loss.hps.surrogate import GPSurrogate


def _context(box, seen, values, pending=(), seed=0, surrogate=None, n_adaptive=0, adaptive_budget=50):
    seen = np.array(seen, dtype=np.int64).reshape(-1, box.dim)
    values = np.array(values, dtype=float)
    pending = np.array(pending, dtype=np.int64).reshape(-1, box.dim)
    finite = np.isfinite(values)
    if surrogate is None and finite.any():
        surrogate = GPSurrogate(box).fit(seen[finite], values[finite])
    taken = {tuple(r) for r in seen.tolist()} | {tuple(r) for r in pending.tolist()}
    return Context(box=box, rng=np.random.default_rng(seed), x_seen=seen, values=values, x_pending=pending,
                   taken=taken, surrogate=surrogate, n_adaptive=n_adaptive, adaptive_budget=adaptive_budget)


def test_perturbation_probability_follows_dycors():
    box = Box.from_bounds([0] * 15, [25] * 15)
    assert perturbation_probability(box, 0, 68) == 1.0  # min(20/15, 1) * (1 - ln 1 / ln 68)
    assert perturbation_probability(box, 9, 68) == pytest.approx(1 - math.log(10) / math.log(68))
    assert perturbation_probability(box, 67, 68) == pytest.approx(1 / 15)  # the floor
    wide = Box.from_bounds([0] * 40, [25] * 40)
    assert perturbation_probability(wide, 0, 100) == pytest.approx(0.5)  # 20/d
    assert perturbation_probability(wide, 99, 100) == pytest.approx(1 / 40)


def test_perturbations_stay_in_bounds_move_by_at_least_one_and_only_some_coordinates():
    box = Box.from_bounds([0] * 10, [25] * 10)
    center = np.full(10, 12)
    # A radius so small that sigma = radius * 25 < 1: sigma must still be 1, or nothing would move.
    points = perturb(box, np.random.default_rng(0), center, 1000, radius=RADIUS_MIN, prob=0.1)
    assert (points >= 0).all() and (points <= 25).all()
    moved = (points != center).sum(axis=1)
    assert (moved >= 1).mean() > 0.5  # with sigma 0.0625 * 25 < 1 most would round back to the centre
    assert moved.mean() < 2.5  # about one coordinate in ten, at least one forced
    everything = perturb(box, np.random.default_rng(0), center, 200, radius=RADIUS_MAX, prob=None)
    assert (everything != center).mean() > 0.8  # SRBF: every coordinate drawn


def test_the_radius_doubles_after_three_successes_and_halves_after_max_d_4_failures():
    strategy = DYCORS(Box.from_bounds([0] * 6, [20] * 6))
    assert strategy.radius == 0.2 and strategy.fail_tol == 6
    for _ in range(5):
        strategy.observe(1.0, 1.0)  # no improvement
    assert strategy.radius == 0.2
    strategy.observe(None, 1.0)  # a failed evaluation is a failure too
    assert strategy.radius == 0.1
    strategy.observe(2.0, 1.0)
    strategy.observe(3.0, 2.0)
    assert strategy.radius == 0.1
    strategy.observe(4.0, 3.0)
    assert strategy.radius == 0.2
    for _ in range(3):
        strategy.observe(10.0, 1.0)
    assert strategy.radius == 0.2  # capped at its maximum
    for _ in range(6 * 10):
        strategy.observe(0.0, 1.0)
    assert strategy.radius == pytest.approx(0.2 * 0.5**6)  # floored


def test_a_success_must_improve_by_more_than_a_thousandth():
    strategy = DYCORS(Box.from_bounds([0] * 4, [20] * 4))
    strategy.observe(-99.95, -100.0)  # +0.05 < 1e-3 * 100
    assert strategy.streak == -1
    strategy.observe(-99.8, -100.0)
    assert strategy.streak == 1


def test_weights_cycle_through_the_four_values():
    box = Box.from_bounds([0] * 3, [10] * 3)
    strategy = DYCORS(box)
    ctx = _context(box, [[0, 0, 0], [10, 10, 10], [5, 2, 7], [3, 9, 1]], [1.0, 2.0, 3.0, 0.5])
    used = []
    for _ in range(6):
        used.append(WEIGHTS[strategy.weight_index])
        strategy.propose(ctx)
    assert used == [0.3, 0.5, 0.8, 0.95, 0.3, 0.5]


def test_fresh_drops_taken_and_repeated_candidates_in_order():
    cands = np.array([[1, 1], [2, 2], [1, 1], [3, 3], [2, 2]])
    assert fresh(cands, {(3, 3)}).tolist() == [[1, 1], [2, 2]]


def test_when_every_candidate_is_taken_wider_ones_are_found_and_an_exhausted_grid_gives_none():
    box = Box.from_bounds([0, 0], [3, 3])
    everything = {(a, b) for a in range(4) for b in range(4)}
    taken = everything - {(3, 0)}
    generated = np.array([[0, 0]] * 20)  # all taken
    out = fresh_candidates(box, np.random.default_rng(0), generated, taken, center=np.array([0, 0]))
    assert out.tolist() == [[3, 0]]
    assert len(fresh_candidates(box, np.random.default_rng(0), generated, everything, None)) == 0


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_the_one_free_point_is_proposed_when_the_rest_is_evaluated_or_pending(name):
    box = Box.from_bounds([0, 0], [3, 3])
    points = [(a, b) for a in range(4) for b in range(4)]
    rng = np.random.default_rng(1)
    order = rng.permutation(16)
    seen = [points[i] for i in order[:10]]
    pending = [points[i] for i in order[10:15]]
    free = points[order[15]]
    values = [-(a - 2) ** 2 - (b - 1) ** 2 for a, b in seen]
    strategy = make_strategy(name, box)
    x = strategy.propose(_context(box, seen, values, pending))
    assert tuple(x.tolist()) == free
    full = _context(box, seen + [free], values + [0.0], pending)
    assert strategy.propose(full) is None


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_proposals_are_never_evaluated_or_pending(name):
    box = Box.from_bounds([0] * 3, [6] * 3)
    rng = np.random.default_rng(0)
    seen = [tuple(r) for r in rng.integers(0, 7, size=(12, 3)).tolist()]
    seen = list(dict.fromkeys(seen))
    values = [-sum((v - 3) ** 2 for v in p) for p in seen]
    strategy = make_strategy(name, box)
    surrogate = GPSurrogate(box).fit(np.array(seen), np.array(values, dtype=float))
    pending: list = []
    for _ in range(15):
        ctx = _context(box, seen, values, pending, seed=len(pending), surrogate=surrogate)
        x = tuple(strategy.propose(ctx).tolist())
        assert x not in seen and x not in pending
        pending.append(x)


def test_the_distance_merit_counts_pending_points():
    # No finite value yet (the only evaluation failed): the merit is distance alone. With 0
    # evaluated and 10 pending, the farthest free point is the middle; without the pending 10 it is 10.
    box = Box.from_bounds([0], [10])
    with_pending = DYCORS(box).propose(_context(box, [[0]], [np.nan], pending=[[10]]))
    alone = DYCORS(box).propose(_context(box, [[0]], [np.nan]))
    assert with_pending.tolist() == [5]
    assert alone.tolist() == [10]


def test_the_merit_weighs_the_surrogate_against_the_distance():
    # A bowl with its top at 8, sampled densely around it: w = 0.95 (mostly surrogate) takes 8,
    # the one free point there; w = 0.3 (mostly distance) goes into the gap away from it.
    box = Box.from_bounds([0], [40])
    seen = [[0], [5], [6], [7], [9], [10], [40]]
    values = [-(x[0] - 8) ** 2 for x in seen]
    greedy, spread = DYCORS(box), DYCORS(box)
    greedy.weight_index = 3
    spread.weight_index = 0
    greedy_x = greedy.propose(_context(box, seen, values))[0]
    spread_x = spread.propose(_context(box, seen, values))[0]
    assert greedy_x == 8
    assert spread_x >= 14


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(GpLossError, match="strategy must be one of dycors, srbf, ei, lcb, got 'bo'"):
        make_strategy("bo", Box.from_bounds([0], [3]))
