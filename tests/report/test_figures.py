"""The report's charts: labels taken from run files cannot put raw control characters on the terminal."""
import warnings

from gp_loss.report.figures import fitness_png, plain

HOSTILE = "\x1b]52;c;ZXZpbA==\x07\u202e\x9b31m"


def test_a_label_shows_control_and_bidi_characters_as_escapes():
    label = plain(HOSTILE, limit=200)
    assert not any(c in label for c in "\x1b\x07\x9b\u202e")
    assert "x1b" in label and "u202e" in label


def test_drawing_a_hostile_label_warns_of_no_raw_control_character():
    records = [{"evaluation": 1, "fitness": 0.5, "status": HOSTILE}, {"evaluation": 2, "fitness": 0.6, "status": "ok"}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fitness_png(records, {HOSTILE: 0.4}, HOSTILE).startswith(b"\x89PNG")
    assert not any(c in str(w.message) for w in caught for c in "\x1b\x07\x9b\u202e")
