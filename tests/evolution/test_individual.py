"""DEAP creator classes of the search and the JSON form of an individual."""
import json
import pickle

from deap import creator

from gp_loss.evolution.individual import (Individual, formulas_of, freeze, genome_of, individual_from_dict,
                                          individual_from_formulas, individual_to_dict, same_formulas)

LAYOUT = {"rcnn_cls": "cls", "rcnn_reg": "reg"}
FORMULAS = {"rcnn_reg": "sub(1, div(i, u))", "rcnn_cls": "neg(dot(y, log(softmax(x))))"}


def test_creator_classes_exist_and_maximise():
    assert Individual is creator.LossIndividual
    assert creator.LossFitness.weights == (1.0,)
    ind = individual_from_formulas(LAYOUT, FORMULAS)
    assert isinstance(ind, list) and not ind.fitness.valid
    assert (ind.id, ind.generation, ind.signature, ind.reused) == (None, None, None, False)


def test_trees_follow_the_layout_order():
    ind = individual_from_formulas(LAYOUT, FORMULAS)
    assert [str(t) for t in ind] == [FORMULAS["rcnn_cls"], FORMULAS["rcnn_reg"]]
    assert formulas_of(LAYOUT, ind) == FORMULAS
    genome = genome_of(LAYOUT, ind)
    assert [(b.name, b.kind.name) for b in genome] == list(LAYOUT.items())


def test_json_round_trip():
    ind = individual_from_formulas(LAYOUT, FORMULAS)
    ind.fitness.values = (0.75,)
    ind.id, ind.generation, ind.reused = 4, 2, True
    ind.signature = ((0.24, 0.25), (1.5, 1.6))
    data = json.loads(json.dumps(individual_to_dict(LAYOUT, ind)))
    assert data == {"formulas": FORMULAS, "fitness": 0.75, "id": 4, "generation": 2,
                    "signature": [[0.24, 0.25], [1.5, 1.6]], "reused": True, "fidelity": 1.0}
    back = individual_from_dict(LAYOUT, data)
    assert formulas_of(LAYOUT, back) == FORMULAS
    assert back.fitness.values == (0.75,)
    assert (back.id, back.generation, back.reused) == (4, 2, True)
    assert back.signature == ind.signature
    hash(back.signature)  # signatures are dictionary keys of the equivalence cache


def test_json_round_trip_without_fitness():
    ind = individual_from_formulas(LAYOUT, FORMULAS)
    data = individual_to_dict(LAYOUT, ind)
    assert data["fitness"] is None and data["signature"] is None
    back = individual_from_dict(LAYOUT, data)
    assert not back.fitness.valid and back.signature is None


def test_individuals_pickle():
    # DEAP 1.4 pickles creator classes by value: the copy's class is rebuilt under the same name.
    ind = individual_from_formulas(LAYOUT, FORMULAS)
    ind.fitness.values = (0.5,)
    back = pickle.loads(pickle.dumps(ind))
    assert type(back).__name__ == "LossIndividual" and back.fitness.values == (0.5,)
    assert same_formulas(back, ind)


def test_freeze_and_same_formulas():
    assert freeze([[1, 2], [3, [4]]]) == ((1, 2), (3, (4,)))
    assert freeze(5) == 5
    a = individual_from_formulas(LAYOUT, FORMULAS)
    b = individual_from_formulas(LAYOUT, dict(FORMULAS, rcnn_reg="sub(1, div(i, e))"))
    assert same_formulas(a, individual_from_formulas(LAYOUT, FORMULAS))
    assert not same_formulas(a, b)
