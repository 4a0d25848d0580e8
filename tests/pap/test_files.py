"""read_pap_parameters: a file nested past the JSON parser's depth is one line, not a RecursionError."""
import pytest

from gp_loss.cli import main
from gp_loss.errors import GpLossError
from gp_loss.pap import read_pap_parameters
from tests.helpers import assert_user_error


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"theta": ' + "[" * 100_000])
def test_a_deeply_nested_file_is_one_line(tmp_path, text):
    path = tmp_path / "theta.json"
    path.write_text(text)
    with pytest.raises(GpLossError, match="nested too deeply"):
        read_pap_parameters(path)


def test_a_deeply_nested_file_given_to_evaluate_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "theta.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    err = assert_user_error(main(["evaluate", "--task", "detection", "--loss", f"pap={path}", "--seeds", "1"]),
                            capsys.readouterr().err)
    assert "nested too deeply" in err and str(path) in err


def test_a_long_detail_is_cut(tmp_path):
    path = tmp_path / "theta.json"
    path.write_text('{"named": "' + "x" * 5000 + '"}')
    with pytest.raises(GpLossError) as err:
        read_pap_parameters(path)
    assert len(str(err.value)) < 400 and str(err.value).endswith("…")
