"""The funnel groups rejections by cause and keeps one real reason of each group."""
from gp_loss.filters.base import StageResult
from gp_loss.filters.funnel import Funnel


def test_reasons_group_by_cause_and_keep_their_first_example_with_its_numbers():
    f = Funnel(["range"])
    for value in ("3.2e+05", "7e+09"):
        f.record(StageResult("range", False, f"loss reaches {value} at the sample prediction in fp32"))
    (key, count), = f.stages["range"].reasons.items()
    assert count == 2 and "#" in key and "fp32" in key
    assert f.stages["range"].examples[key] == "loss reaches 3.2e+05 at the sample prediction in fp32"


def test_examples_survive_merging_and_the_checkpoint_in_order():
    a, b = Funnel(["range"]), Funnel(["range"])
    a.record(StageResult("range", False, "loss reaches 5 at step 1"))
    b.record(StageResult("range", False, "loss reaches 9 at step 2"))
    a.merge(b)
    again = Funnel.from_dict(a.to_dict())
    assert again.stages["range"].examples == a.stages["range"].examples
    assert list(again.stages["range"].examples.values()) == ["loss reaches 5 at step 1"]
    # A checkpoint written before examples were kept still loads.
    old = a.to_dict()
    del old["stages"]["range"]["examples"]
    assert Funnel.from_dict(old).stages["range"].examples == {}


def test_rejections_for_time_are_counted_apart_and_survive_merging_and_the_checkpoint():
    a, b = Funnel(["rejection"]), Funnel(["rejection"])
    a.record(StageResult("rejection", False, "too slow: ran past its time limit of 10 s of CPU time",
                         timed_out=True))
    a.record(StageResult("rejection", False, "metric gain 0.01 < eta 0.1"))
    b.record(StageResult("rejection", False, "too slow: ran past its time limit of 10 s of CPU time",
                         timed_out=True))
    assert (a.too_slow, a.stages["rejection"].rejected) == (1, 2)
    a.merge(b)
    again = Funnel.from_dict(a.to_dict())
    assert again.too_slow == 2 and again.to_dict()["too_slow"] == 2
    assert "2 for the time limit" in again.table()
    assert "time limit" not in Funnel(["rejection"]).table()


def test_a_checkpoint_saved_before_rejections_for_time_were_counted_apart_counts_them_by_reason():
    f = Funnel(["rejection"])
    f.record(StageResult("rejection", False, "too slow: ran past its time limit of 10 s", timed_out=True))
    f.record(StageResult("rejection", False, "metric gain 0.01 < eta 0.1"))
    old = f.to_dict()
    del old["too_slow"], old["stages"]["rejection"]["too_slow"]
    assert Funnel.from_dict(old).too_slow == 1
