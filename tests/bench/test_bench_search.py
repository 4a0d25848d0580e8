"""The search speed benchmark: alternating pairs, the median speed-up, the CLI's checks."""
from gp_loss.bench import search as bench
from gp_loss.cli import main


def test_pairs_alternate_and_the_median_speed_up_is_reported(monkeypatch):
    calls = []
    per_minute = iter([100, 170, 80, 160, 100, 150])  # serial, parallel, serial, parallel, ...

    def fake_run(label, out, workers, script, common):
        calls.append(label)
        return {"evaluations_per_minute": next(per_minute), "hall_of_fame": [{"cls": "neg(x)"}],
                "workers": 1 if label == "serial" else workers}

    monkeypatch.setattr(bench, "_run", fake_run)
    result = bench.bench_search(10, workers=2, backend="multiprocessing", repeats=3)
    assert calls == ["serial", "multiprocessing"] * 3
    assert [round(s, 2) for s in result["speedups"]] == [1.7, 2.0, 1.5]
    assert result["speedup"] == 1.7 and result["same_hall_of_fame"]
    assert result["runs"]["serial"]["evaluations_per_minute"] == 100  # the last pair


def test_a_different_hall_of_fame_in_any_pair_is_reported(monkeypatch):
    halls = iter([[{"cls": "a"}], [{"cls": "a"}], [{"cls": "a"}], [{"cls": "b"}]])
    monkeypatch.setattr(bench, "_run", lambda label, *a: {"evaluations_per_minute": 60,
                                                          "hall_of_fame": next(halls)})
    assert not bench.bench_search(10, repeats=2)["same_hall_of_fame"]


def test_cli_refuses_a_repeat_count_below_one(capsys):
    assert main(["bench", "search", "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
