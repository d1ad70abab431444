"""printable: how a file name (or any text from outside) is shown to a person, and the error
handler that prints through it. The CLI's printers on real odd names are in test_cli.py."""

from __future__ import annotations

import os
import unicodedata

import pytest

from imgwatch import reports
from imgwatch.errors import EXIT_ERROR, ImgwatchError, exit_on_error, printable

C0 = [chr(code) for code in range(0x20)]
C1 = [chr(code) for code in range(0x80, 0xA0)]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07.jpg", "\\x1b]0;pwned\\x07.jpg"),  # OSC: retitles the terminal
        ("\x1b[2J.jpg", "\\x1b[2J.jpg"),  # CSI: clears the screen
        ("\x1b[31mred.jpg", "\\x1b[31mred.jpg"),
        ("a\nfake 0.9999  b.jpg", "a\\nfake 0.9999  b.jpg"),  # would fake a result line
        ("over\rwritten\t.jpg", "over\\rwritten\\t.jpg"),
        ("nul\x00del\x7f.jpg", "nul\\x00del\\x7f.jpg"),
        ("csi\x9b31m.jpg", "csi\\x9b31m.jpg"),  # the 8-bit CSI, a C1 control
        ("x\u202egnp.jpg", "x\\u202egnp.jpg"),  # right-to-left override: would read "xgpj.png"
        ("a\u2028b\u2029c\u2066d\u200fe", "a\\u2028b\\u2029c\\u2066d\\u200fe"),
        ("/p/caf\udce9.jpg", "/p/caf\\xe9.jpg"),  # b"/p/caf\xe9.jpg" as os.fsdecode gives it
        (os.fsdecode(b"/p/\x9b\x1b.jpg"), "/p/\\x9b\\x1b.jpg"),  # a lone 0x9b byte is not valid UTF-8
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),  # not a byte's stand-in
    ],
)
def test_control_characters_and_odd_bytes_become_visible_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_every_c0_del_and_c1_control_is_escaped_and_the_result_is_one_safe_line() -> None:
    text = "".join(C0 + ["\x7f"] + C1)
    shown = printable(text)
    assert not any(unicodedata.category(char) == "Cc" for char in shown)
    assert shown.isascii() and shown.count("\\") == len(C0) + 1 + len(C1)
    shown.encode("utf-8")  # strict UTF-8 streams can write it


@pytest.mark.parametrize(
    "text",
    ["café.jpg", "写真 2024/海.png", "📷 👨‍👩‍👧 🏳️‍🌈.heic",  # emoji joined by ZWJ and variation selectors
     "Ελλάδα / עברית / العربية.jpg", "a\\x1b.jpg", "space  and\u00a0nbsp.jpg", ""],
)
def test_ordinary_text_is_kept_as_it_is(text: str) -> None:
    assert printable(text) == text


def test_escaping_twice_changes_nothing_more() -> None:
    text = "\x1b[2J/p/caf\udce9\n\x9b.jpg"
    assert printable(printable(text)) == printable(text)


def test_the_web_and_the_reports_use_the_same_rule() -> None:
    assert reports.printable is printable  # the web's Jinja filter imports it from imgwatch.reports


def test_an_error_naming_an_odd_file_is_printed_as_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, exit_on_error():
        raise ImgwatchError("cannot decode /p/\x1b[2J.jpg\nimgwatch: all good")
    assert exited.value.code == EXIT_ERROR
    assert capsys.readouterr().err == "imgwatch: error: cannot decode /p/\\x1b[2J.jpg\\nimgwatch: all good\n"
