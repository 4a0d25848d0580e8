"""The filter benchmark counts survivors that gradient equivalence would reuse."""
from primitives import get_kind

from gp_loss.bench.filters import bench_filters
from gp_loss.language.parse import parse_formula
from gp_loss.paper_losses import PAPER_LOSSES


def test_copies_of_a_survivor_are_reused_not_trained():
    kind = get_kind("bcls")
    bce = parse_formula(kind, PAPER_LOSSES["bce"].formula)
    # max_candidates keeps this deterministic: the same seed gives the same candidates.
    a = bench_filters(kind, seconds=120, seed=3, max_candidates=200, random_trees=100, parents=[bce])
    b = bench_filters(kind, seconds=120, seed=3, max_candidates=200, random_trees=100, parents=[bce])
    search = a["search"]
    assert search["candidates"] == 200
    # The offspring rule copies parents 10% of the time: copies of survivors are cache hits.
    assert search["reused"] > 0 and search["to_proxy_training"] > 0
    assert search["to_proxy_training"] + search["reused"] == search["passed"]
    assert a["search"]["passed"] == b["search"]["passed"]
    assert a["random_init"]["passed"] == b["random_init"]["passed"]
    # Random depth-3 trees are almost all rejected by stages 1-4.
    assert a["random_init"]["rejected_fraction"] >= 0.9
