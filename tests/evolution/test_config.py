"""SearchConfig: the papers' defaults, check() naming the bad field, config_diff, JSON round trip."""
import json

import pytest

from gp_loss.errors import GpLossError
from gp_loss.evolution.config import BUDGET_FIELDS, SearchConfig, config_diff


def test_defaults_are_the_papers_constants():
    c = SearchConfig()
    # AutoLoss-Zero (Li et al., CVPR 2022): K, P, T, D, copy / re-init probabilities, two mutations
    assert (c.population, c.max_population, c.tournament_fraction, c.init_depth) == (20, 2500, 0.05, 3)
    assert (c.p_copy, c.p_reinit, c.n_mutations) == (0.1, 0.5, 2)
    assert c.scheme == "zero" and c.branches == {"cls": "cls"}
    assert c.start == {"cls": "neg(dot(y, log(softmax(x))))"}
    assert c.searched == ["cls"]
    assert c.check() is c


def test_default_lists_are_not_shared_between_instances():
    a, b = SearchConfig(), SearchConfig()
    a.baselines.append("focal")
    a.branches["extra"] = "cls"
    assert b.baselines == ["ce"] and b.branches == {"cls": "cls"}


@pytest.mark.parametrize("changes, field_named", [
    ({"population": -1}, "population"),
    ({"population": 0}, "population"),
    ({"offspring_per_generation": 0}, "offspring_per_generation"),
    ({"n_mutations": -1}, "n_mutations"),
    ({"population": 30, "max_population": 20}, "max_population"),
    ({"scheme": "ga"}, "scheme"),
    ({"branches": {"cls": "nope"}}, "kind"),
    ({"branches": {}}, "branches"),
    ({"search": ["box"]}, "search"),
    ({"scheme": "cse", "start": {}}, "start"),
    ({"p_copy": 1.5}, "p_copy"),
    ({"p_reinit": -0.1}, "p_reinit"),
    ({"tournament_fraction": 2}, "tournament_fraction"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"start": {"cls": "neg(dot(y, log(softmax(x))))", "box": "x"}}, "box"),
    ({"start": {"cls": "neg(dot(y, log(softmax(q))))"}}, "cls"),
    ({"task_options": {"data": "/nonexistent/images"}}, "data"),
    ({"task_options": {"epochs": 3}}, "epochs"),
    ({"task_options": {"proxy_epochs": 0}}, "proxy_epochs"),
    ({"task": "detection"}, "detection"),
    ({"baselines": ["hinge"]}, "hinge"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": 10**30}, "seed"),
    ({"max_seconds": float("nan")}, "max_seconds"),
    ({"max_seconds": float("inf")}, "max_seconds"),
    ({"tournament_fraction": float("nan")}, "tournament_fraction"),
    ({"eval_time_limit_s": float("inf")}, "eval_time_limit_s"),
    ({"init_depth": 100}, "init_depth"),
    ({"init_depth": 13}, "init_depth"),  # deeper than max_height (12)
    ({"max_height": 18}, "max_height"),
    ({"final_seeds": 10**8}, "final_seeds must be at most 1000"),
    ({"task_options": {"lr": float("nan")}}, "lr"),
    ({"task_options": {"train_fraction": float("inf")}}, "train_fraction"),
])
def test_check_rejects_and_names_the_field(changes, field_named):
    with pytest.raises(GpLossError) as err:
        SearchConfig(**changes).check()
    assert field_named in str(err.value)


def test_check_names_the_unknown_kind_and_branch():
    with pytest.raises(GpLossError, match=r"branch 'cls'.*kind.*'nope'"):
        SearchConfig(branches={"cls": "nope"}).check()
    with pytest.raises(GpLossError, match=r"search names branch 'box'"):
        SearchConfig(search=["box"]).check()


def test_check_accepts_a_cse_layout_with_a_fixed_branch():
    c = SearchConfig(scheme="cse", branches={"a": "cls", "b": "bcls"}, search=["a"],
                     start={"a": "neg(dot(y, log(softmax(x))))", "b": "neg(mul(y, log(sigmoid(x))))"},
                     baselines=[])
    assert c.check() is c
    assert c.searched == ["a"]
    assert c.start_genome().formulas() == c.start


def test_zero_scheme_needs_start_only_for_fixed_branches():
    SearchConfig(start={}).check()  # every branch is searched: nothing fixed
    with pytest.raises(GpLossError, match="start formula missing for branch.*b"):
        SearchConfig(branches={"a": "cls", "b": "cls"}, search=["a"], start={}).check()


def test_check_rejects_a_kind_the_task_cannot_train():
    with pytest.raises(GpLossError, match="reg"):
        SearchConfig(branches={"cls": "reg"}, start={}).check()


def test_config_diff_ignores_budget_and_lists_the_rest():
    old = SearchConfig().to_dict()
    new = SearchConfig(max_evaluations=999, max_seconds=60.0).to_dict()
    assert set(BUDGET_FIELDS) == {"max_evaluations", "max_seconds"}
    assert config_diff(old, new) == []
    new = SearchConfig(population=30, scheme="cse", max_evaluations=5).to_dict()
    assert config_diff(old, new) == ['population: 20 -> 30', 'scheme: "zero" -> "cse"']
    assert config_diff(old, new, ignore=()) == ['max_evaluations: 200 -> 5', 'population: 20 -> 30',
                                                'scheme: "zero" -> "cse"']


def test_config_diff_reports_added_and_nested_keys():
    old = SearchConfig().to_dict()
    new = SearchConfig(task_options={"proxy_epochs": 1}).to_dict()
    assert config_diff(old, new) == ['task_options: {} -> {"proxy_epochs": 1}']
    assert config_diff({"a": 1}, {}) == ["a: 1 -> null"]


def test_to_dict_from_dict_round_trip():
    c = SearchConfig(scheme="cse", seed=7, population=5, search=["cls"], max_seconds=12.5,
                     task_options={"proxy_epochs": 1}, baselines=["ce", "focal"])
    d = c.to_dict()
    assert SearchConfig.from_dict(d) == c
    assert SearchConfig.from_dict(json.loads(c.to_json())) == c
    assert json.loads(c.to_json()) == d


def test_from_dict_with_unknown_key_errors():
    d = SearchConfig().to_dict()
    d["populaton"] = 5
    with pytest.raises(GpLossError, match="unknown configuration key.*populaton"):
        SearchConfig.from_dict(d)


@pytest.mark.parametrize("changes, field", [
    ({"population": "ten"}, "population"),
    ({"p_copy": "x"}, "p_copy"),
    ({"simulate": 1}, "simulate"),
    ({"max_seconds": "soon"}, "max_seconds"),
    ({"task_options": {"proxy_epochs": "3"}}, "proxy_epochs"),
    ({"task_options": {"lr": True}}, "lr"),
])
def test_check_rejects_values_of_the_wrong_type(changes, field):
    with pytest.raises(GpLossError, match=field):
        SearchConfig(**changes).check()


def test_a_run_made_before_the_device_setting_resumes_on_the_cpu(tmp_path):
    from gp_loss.evolution.config import with_added_fields
    old = SearchConfig().to_dict()
    del old["device"], old["deterministic"]
    upgraded = with_added_fields(old)
    assert upgraded["device"] == "cpu" and upgraded["deterministic"] is False
    assert config_diff(upgraded, SearchConfig(device="cpu").to_dict()) == []
    assert config_diff(upgraded, SearchConfig().to_dict()) == ['device: "cpu" -> "auto"']


def test_seed_and_tree_bounds_accept_their_limits():
    from gp_loss.evolution.config import MAX_SEED, MAX_TREE_HEIGHT
    SearchConfig(seed=0).check()
    SearchConfig(seed=MAX_SEED).check()
    SearchConfig(init_depth=MAX_TREE_HEIGHT, max_height=MAX_TREE_HEIGHT).check()
