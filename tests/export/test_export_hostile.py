"""Exported modules are data-safe: outside text (headers, formulas) never becomes code,
branch names never clash with each other or the module's own names, constants are valid code."""
import ast
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from gp_loss.errors import GpLossError
from gp_loss.export import export_torch
from gp_loss.export.torch_module import docstring_text
from gp_loss.kinds import kind_spec
from gp_loss.language import Genome, compile_loss

HOSTILE_HEADERS = [
    '/tmp/x"""; import os; os.system("id>PWN"); """',
    "/tmp/x'''; import os; os.system('id>PWN'); '''",
    "C:\\users\\new\\unit \\u \\N{x} \\x \\",
    "run in /tmp/a\nimport os; os.system('id>PWN')\n\"\"\"\nos.system('id>PWN')",
    "carriage\rreturn\r\nand \x0b \x0c \x1c \x85 \u2028 \u2029 separators",
    "nul \x00 bell \x07 tab \t end\\",
    "non-ASCII: naïve 日本語 😀 \ud800",
    '"',
    '""',
    '\\"""',
    "",
]
CE = "neg(dot(y, log(softmax(x))))"


def _genome():
    return Genome.from_specs([f"cls={CE}", "reg=sub(1, div(i, u))"])


def _top_level_is_only_definitions(source):
    """Every top-level statement is the docstring, an import, a def, a class or a plain assignment."""
    tree = ast.parse(source)
    for k, node in enumerate(tree.body):
        if k == 0:
            assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            continue
        assert isinstance(node, (ast.Import, ast.FunctionDef, ast.ClassDef, ast.Assign)), ast.dump(node)
        if isinstance(node, ast.Assign):  # aliases and the LOSSES table: names, no calls
            assert not any(isinstance(n, ast.Call) for n in ast.walk(node))
    return tree


@pytest.mark.parametrize("header", HOSTILE_HEADERS)
def test_hostile_header_stays_text(header, tmp_path):
    source = export_torch(_genome(), header=header)
    _top_level_is_only_definitions(source)
    assert source.isascii()
    path = tmp_path / "hall_of_fame.py"
    path.write_text(source, encoding="utf-8")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import hall_of_fame as m
        names = sorted(n for n in vars(m) if not n.startswith("__"))
        print(json.dumps(names))
        print(json.dumps(m.__doc__))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tmp_path.iterdir()} - {"__pycache__"} == {"hall_of_fame.py"}  # no PWN
    names, doc = out.stdout.splitlines()
    assert json.loads(names) == sorted(["math", "torch", "cls", "reg", "cls_fn", "reg_fn", "ClsLoss", "RegLoss",
                                  "GenomeLoss", "LOSSES"])
    # The docstring reads back as the header, line by line.
    assert "\n".join(header.splitlines()) in json.loads(doc)


@pytest.mark.parametrize("text", HOSTILE_HEADERS)
def test_docstring_text_reads_back(text):
    literal = '"""' + docstring_text(text) + '"""'
    assert "\n".join(text.splitlines()) == ast.literal_eval(literal)


@pytest.mark.parametrize("specs", [
    ["self:cls=x"], ["total:cls=x"], ["genome:cls=x"], ["cls=x", "cls_fn:cls=x"],
    ["a_b:cls=x", "a__b:cls=x"], ["a_1:cls=x", "a1:cls=x"], ["x:cls=x"], ["yhat:zero=yhat"],
    ["torch:cls=x"], ["math:cls=x"], ["sum:cls=x"], ["print:cls=x"], ["lambda:cls=x"],
])
def test_clashing_branch_names_are_refused(specs):
    with pytest.raises(GpLossError, match="branch name"):
        Genome.from_specs(specs)


def test_export_refuses_a_branch_renamed_after_checking():
    genome = _genome()
    genome["cls"].name = "self"
    with pytest.raises(GpLossError, match="'self'"):
        export_torch(genome)
    genome["cls"].name = "reg_fn"
    with pytest.raises(GpLossError, match="clash"):
        export_torch(genome)


def test_names_that_look_alike_export_to_the_right_losses(tmp_path):
    genome = Genome.from_specs([f"a_b:cls={CE}", f"ab:cls=mul(2, {CE})", f"a_bc:cls=mul(3, {CE})",
                                f"fn:cls=mul(4, {CE})", f"loss:cls=mul(5, {CE})", f"t1:cls=mul(6, {CE})"])
    path = tmp_path / "alike.py"
    path.write_text(export_torch(genome))
    spec = importlib.util.spec_from_file_location("alike", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = [t.detach().double() for t in kind_spec("cls").sample_batch(seed=1).inputs()]
    total = 0
    for b in genome:
        want = compile_loss(b.kind, b.tree)(*inputs)
        torch.testing.assert_close(module.LOSSES[b.name](*inputs), want)
        total = total + want
    torch.testing.assert_close(module.GenomeLoss()(**{b.name: inputs for b in genome}), total)


@pytest.mark.parametrize("literal", ["1e308", "-1e308", "1.7976931348623157e308", "5e-324", "1e-400",
                                     "9007199254740992", "-9007199254740992", "0.1", "123456789.125",
                                     "-0.0", "+2", "007", "0" * 5000 + "3"])
def test_accepted_constants_round_trip_and_export(literal, tmp_path):
    genome = Genome.from_specs([f"cls=add(mul({literal}, x), mul(sub(x, {literal}), 1e-300))"])
    text = genome["cls"].formula
    again = Genome.from_specs([f"cls={text}"])
    assert again["cls"].formula == text
    assert [repr(n.value) for n in again["cls"].tree if not hasattr(n, "args")] == \
        [repr(n.value) for n in genome["cls"].tree if not hasattr(n, "args")]
    path = tmp_path / "consts.py"
    path.write_text(export_torch(genome))
    spec = importlib.util.spec_from_file_location("consts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = [t.detach().double() for t in kind_spec("cls").sample_batch(seed=1).inputs()]
    torch.testing.assert_close(module.cls(*inputs), compile_loss(genome["cls"].kind, genome["cls"].tree)(*inputs),
                               equal_nan=True)
