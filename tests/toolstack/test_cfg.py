"""The xl.cfg grammar: values, quoting, lists, comments, +=, and errors at exact lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenvirtio.toolstack.cfg import ConfigError, Item, parse_config, plain


def values(text: str) -> dict[str, object]:
    return {key: plain(s.value) for key, s in parse_config(text, "t.cfg").items()}


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.cfg")
    return info.value


def test_strings_numbers_and_statement_ends() -> None:
    text = "a = \"x\"\nb='y' ; c = 42;d = 0x1F\ne = 017\n\n;\nf = 0\n"
    assert values(text) == {"a": "x", "b": "y", "c": 42, "d": 31, "e": 15, "f": 0}


def test_last_line_without_newline_and_crlf() -> None:
    assert values('a = "x"\r\nb = 2') == {"a": "x", "b": 2}


def test_each_key_keeps_its_line() -> None:
    parsed = parse_config('\n# comment\nname = "n"\n\nmemory = 1\n', "t.cfg")
    assert [(k, s.line) for k, s in parsed.items()] == [("name", 3), ("memory", 5)]


def test_double_quoted_escapes() -> None:
    text = r'a = "q\" s\' b\\ \a\b\f\n\r\t\v \x41\x7a \101\0"'
    assert values(text)["a"] == "q\" s' b\\ \a\b\f\n\r\t\v Az A\0"


def test_single_quotes_end_at_the_next_quote_and_keep_double_quotes() -> None:
    assert values("a = 'say \"hi\" \\t'")["a"] == 'say "hi" \t'
    assert values("a = 'x#y'  # comment")["a"] == "x#y"


def test_lists_nest_span_lines_and_take_a_trailing_comma() -> None:
    text = "l = [\n  'a', # one\n  2,\n  [ 'b', [] ],\n]\ne = []\n"
    assert values(text) == {"l": ["a", 2, ["b", []]], "e": []}
    items = parse_config(text, "t.cfg")["l"].value
    assert isinstance(items, tuple)
    assert [i.line for i in items] == [2, 3, 4]
    assert isinstance(items[0], Item)


def test_plus_equals_appends_strings_and_lists() -> None:
    text = "s = 'a'\ns += 'b'\nl = ['x']\nl += ['y', 'z']\nn += 'new'\n"
    assert values(text) == {"s": "ab", "l": ["x", "y", "z"], "n": "new"}


def test_a_key_set_twice_keeps_the_last_value_with_a_warning() -> None:
    parsed = parse_config("a = 1\na = 2\n", "t.cfg")
    assert plain(parsed["a"].value) == 2 and parsed["a"].line == 2
    assert [str(w) for w in parsed.warnings] == ["t.cfg:2: a: warning: set again; replaces line 1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a = 1\ntype = hvm\n', "t.cfg:2: type: bare word 'hvm': quote strings (\"hvm\")"),
        ('a = 1\n\nb = "open\n', "t.cfg:3: unterminated string (opening \" has no closing one)"),
        ("a = 'x\n'", "t.cfg:1: unterminated string (opening ' has no closing one)"),
        ("a = 1\nl = [ 'x',\n 'y'\n", "t.cfg:2: l: unterminated list: no ']'"),
        ("l = [ 'x'\n 'y' ]", "t.cfg:2: l: expected ',' or ']' in the list, found 'y'"),
        ("l = [ , ]", "t.cfg:1: l: expected a value, found ','"),
        ("a = 1 2", "t.cfg:1: a: expected the end of the line after the value, found '2'"),
        ("a =\n1", "t.cfg:1: a: expected a value, found newline"),
        ("a\n= 1", "t.cfg:1: a: expected '=' or '+=' after the key, found newline"),
        ("\n\n= 3", "t.cfg:3: expected a setting (key = value), found '='"),
        ("m = 09", "t.cfg:1: '09' is not a valid number"),
        ("m = 12ab", "t.cfg:1: '12ab' is not a valid number"),
        ('x = "\\q"', "t.cfg:1: invalid escape '\\q' in a quoted string"),
        ('x = "\\x4"', "t.cfg:1: invalid escape '\\x' in a quoted string"),
        ("x = 'a\\'", "t.cfg:1: backslash at the end of a string"),
        ("\nx = (1, 2)", "t.cfg:2: unexpected character '(' (xl.cfg is not Python: "
         "only strings, numbers and lists)"),
        ("x = 1\nx += 2", "t.cfg:2: x: += does not apply to numbers"),
        ("x = 'a'\nx += ['b']", "t.cfg:2: x: += cannot add a list to a string or vice versa"),
        ("x = " + "[" * 40 + "]" * 40, "t.cfg:1: x: lists nested deeper than 32"),
    ],
)  # fmt: skip
def test_syntax_errors_name_the_line(text: str, expected: str) -> None:
    assert str(error(text)) == expected


_ALPHABET = st.sampled_from(list("ab01x=+[],;#'\"\\ \t\n()-.é"))


@given(st.text(_ALPHABET, max_size=60) | st.text(max_size=40))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        parsed = parse_config(text, "fuzz.cfg")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.cfg:")
        assert 1 <= exc.line <= text.count("\n") + 1
    else:
        for setting in parsed.values():
            assert 1 <= setting.line <= text.count("\n") + 1


@given(st.text(max_size=30))
def test_any_string_round_trips_through_double_quote_escapes(s: str) -> None:
    def escape(ch: str) -> str:
        if ch in '"\\':
            return "\\" + ch
        return "\\n" if ch == "\n" else ch

    assert values('v = "' + "".join(escape(c) for c in s) + '"')["v"] == s
