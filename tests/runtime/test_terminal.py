"""safe_text: no control character or bidi override from a file reaches the terminal raw."""
import unicodedata

from gp_loss.runtime.terminal import safe_line, safe_text

CLIPBOARD_WRITE = "\x1b]52;c;ZXZpbA==\x07"


def test_escape_sequences_become_visible_text():
    assert safe_text(f"add(x, {CLIPBOARD_WRITE})") == "add(x, \\x1b]52;c;ZXZpbA==\\x07)"
    assert safe_text("\x9b2J\r\x7f") == "\\x9b2J\\x0d\\x7f"  # C1 CSI, carriage return, DEL
    assert safe_text("a\u202eb\u2066c\u200f") == "a\\u202eb\\u2066c\\u200f"  # bidi override, isolate, mark


def test_every_control_character_is_escaped_and_text_is_kept():
    for code in range(0x3000):
        char = chr(code)
        if unicodedata.category(char) == "Cc" and char not in "\n\t":
            assert safe_text(char).startswith("\\x"), hex(code)
    text = "θ = 0.25 × exp(x)\n\tslog: \\operatorname{slog}, é, 数"
    assert safe_text(text) == text  # line breaks, tabs, backslashes (LaTeX) and letters unchanged


def test_single_line_escapes_line_breaks_too():
    assert safe_line("a\nb\tc\u2028d") == "a\\x0ab\\x09c\\u2028d"
    assert safe_text("a\u2028b") == "a\\u2028b"  # a line separator never breaks a report's line
    assert safe_line(3) == "3"
