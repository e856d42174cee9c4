"""The SQL lexer: tokens as both ClickHouse engines split them, or a refusal."""

from __future__ import annotations

import pytest

from touchpoint.exceptions import QueryRefused
from touchpoint.sinks.sql_tokens import canonical, enclosed, tokenize


def _texts(sql: str) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in tokenize(sql)]


def test_strings_take_backslash_escapes_and_doubled_quotes() -> None:
    assert _texts(r"SELECT 'a\'b', 'c''d', 'e\\', '' AS x") == [
        ("word", "SELECT"), ("string", r"'a\'b'"), ("symbol", ","), ("string", "'c''d'"),
        ("symbol", ","), ("string", "'e\\\\'"), ("symbol", ","), ("string", "''"),
        ("word", "AS"), ("word", "x")]


def test_comment_marks_inside_strings_and_names_are_text() -> None:
    assert _texts("SELECT '-- /* ;', `a -- b`, \"c /* d\"") == [
        ("word", "SELECT"), ("string", "'-- /* ;'"), ("symbol", ","), ("quoted", "`a -- b`"),
        ("symbol", ","), ("quoted", '"c /* d"')]


def test_comments_are_gaps_and_leave_no_trace() -> None:
    tokens = tokenize("SELECT/* x */1--y\n,2\r\n-- z")
    assert [(t.text, t.gap) for t in tokens] == [("SELECT", False), ("1", True),
                                                 (",", True), ("2", False)]
    assert canonical(tokens) == "SELECT 1 ,2"


def test_a_comment_never_joins_two_tokens_into_another() -> None:
    assert canonical(tokenize("1-/**/-1")) == "1- -1"
    assert canonical(tokenize("a/**/b")) == "a b"


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT 1 /* a /* b */", "nested"),
    ("SELECT 1 /* a", "not closed"),
    ("SELECT 'a", "not closed"),
    ("SELECT 'a\\", "not closed"),
    ("SELECT `a", "not closed"),
    ("SELECT `a\\`b`", "backslash"),
    ('SELECT "a\\"b"', "backslash"),
    ("SELECT 1 # x", "#"),
    ("SELECT $$x$$", "heredoc"),
    ("SELECT {a:UInt8}", "{"),
    ("SELECT @x", "@"),
    ("SELECT \\N", "backslash"),
    ("SELECT 1\u00a0", "ASCII"),
    ("SELECT é", "ASCII"),
    ("SELECT \x00", "not accepted"),
    ("SELECT 1 -- a\rb", "carriage return"),
    ("SELECT 12ab", "malformed number"),
    ("SELECT 0xZZ", "malformed number"),
])
def test_what_the_engines_may_read_differently_is_refused(sql: str, reason: str) -> None:
    with pytest.raises(QueryRefused, match=reason):
        tokenize(sql)


def test_numbers_are_single_tokens() -> None:
    assert [t.text for t in tokenize("0x1F 0b101 1_000 1.5e-3 2. 7")] == [
        "0x1F", "0b101", "1_000", "1.5e-3", "2.", "7"]


def test_unicode_inside_strings_and_names_is_fine() -> None:
    assert _texts("SELECT '中文 \u00a0', `名字`") == [
        ("word", "SELECT"), ("string", "'中文 \u00a0'"), ("symbol", ","), ("quoted", "`名字`")]


@pytest.mark.parametrize("sql", [
    "SELECT 1; SELECT 2",
    "SELECT 1) UNION ALL SELECT * FROM file('/etc/passwd') WHERE (1",
    "SELECT 1) INTO OUTFILE '/tmp/x' --",
    "SELECT (1",
])
def test_sql_that_could_leave_its_parentheses_is_not_enclosed(sql: str) -> None:
    with pytest.raises(QueryRefused):
        enclosed(sql)


def test_parentheses_inside_strings_and_comments_do_not_count() -> None:
    assert len(enclosed("SELECT ')' -- )\n, (1) /* ( */")) == 6
