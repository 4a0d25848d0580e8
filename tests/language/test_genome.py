"""Multi-branch genomes and their JSON form."""
import json

import pytest

from gp_loss.errors import FormulaError, GpLossError
from gp_loss.language import Genome


def test_json_round_trip_keeps_order_names_and_kinds():
    g = Genome.from_specs([
        "rpn_cls:bcls=neg(mul(y, log(sigmoid(x))))", "rpn_reg:reg=sub(1, div(i, u))",
        "rcnn_cls:cls=neg(dot(y, log(softmax(x))))", "rcnn_reg:reg=add(sub(1, div(i, u)), div(sub(e, u), e))",
    ])
    data = json.loads(g.to_json())
    assert [b["name"] for b in data["branches"]] == ["rpn_cls", "rpn_reg", "rcnn_cls", "rcnn_reg"]
    again = Genome.from_json(g.to_json())
    assert again.formulas() == g.formulas()
    assert [b.kind.name for b in again] == ["bcls", "reg", "cls", "reg"]


@pytest.mark.parametrize("specs, fragment", [
    (["cls"], "KIND=FORMULA"),
    (["nope=x"], "unknown kind 'nope'"),
    (["cls=x", "cls=y"], "given twice"),
    (["Bad:cls=x"], "bad branch name"),
    (["import:cls=x"], "bad branch name"),
])
def test_bad_specs(specs, fragment):
    with pytest.raises(GpLossError, match=fragment):
        Genome.from_specs(specs)


def test_formula_errors_name_the_branch():
    with pytest.raises(FormulaError, match="branch 'reg'.*unknown name 'x'"):
        Genome.from_specs(["reg=sub(1, x)"])


@pytest.mark.parametrize("text", ["{", "[]", '{"branches": [{"name": "cls"}]}'])
def test_bad_json(text):
    with pytest.raises(GpLossError):
        Genome.from_json(text)
