"""ClickHouse SQL split into tokens exactly as both engines split it, or refused.

People's SQL is checked before it runs (:mod:`touchpoint.sinks.query_guard`), and a check
is only as good as its agreement with the engine on where a string, a quoted name or a
comment begins and ends. ClickHouse 18.16 and the embedded engine (chdb, a current
ClickHouse) disagree on some of that: ``/* /* */`` nests in one and not the other, ``#``
starts a comment in one and is an error in the other, ``$$...$$`` is a string in one. So
this lexer accepts only what both read the same way (ASCII outside quotes, ``--`` and
unnested ``/* */`` comments, ``'...'`` strings, backquoted or double-quoted names without
backslashes) and refuses the rest with a reason a person can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from touchpoint.exceptions import QueryRefused

__all__ = ["Token", "canonical", "enclosed", "tokenize"]

TokenKind = Literal["word", "quoted", "string", "number", "symbol"]

#: What separates tokens in both engines (ClickHouse's ``isWhitespaceASCII``).
_WHITESPACE = frozenset(" \t\n\r\f\v")
_SYMBOLS = frozenset("()[],;.+-*/%<>=!|&^~?:")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0[xX][0-9A-Fa-f_]+|0[bB][01_]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?"
)
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")
#: Characters refused outside strings, and why.
_REFUSED = {
    "#": "`#` comments are not accepted (ClickHouse versions read them differently): use --",
    "$": "`$` is not accepted (heredoc strings and parameters): use '...' strings",
    "{": "`{...}` is not accepted (query parameters, map literals)",
    "}": "`{...}` is not accepted (query parameters, map literals)",
    "@": "`@` is not accepted",
    "\\": "a backslash is accepted only inside '...' strings",
}


@dataclass(frozen=True)
class Token:
    """One token: its kind, its text as written, and where it starts in the SQL."""

    kind: TokenKind
    text: str
    start: int
    gap: bool  # whitespace or a comment before it

    @property
    def end(self) -> int:
        """Offset just past the token."""
        return self.start + len(self.text)


def tokenize(sql: str) -> list[Token]:
    """The tokens of ``sql``, comments and whitespace left out.

    Raises :class:`~touchpoint.exceptions.QueryRefused` for what the engines may read
    differently or this lexer does not know.
    """
    tokens: list[Token] = []
    i, n, gap = 0, len(sql), False
    while i < n:
        c = sql[i]
        if c in _WHITESPACE:
            i, gap = i + 1, True
        elif sql.startswith("--", i):
            i, gap = _line_comment_end(sql, i), True
        elif sql.startswith("/*", i):
            i, gap = _block_comment_end(sql, i), True
        elif c == "'":
            i = _add(tokens, "string", sql, i, _quoted_end(sql, i, "'", escapes=True), gap)
            gap = False
        elif c in "`\"":
            i = _add(tokens, "quoted", sql, i, _quoted_end(sql, i, c, escapes=False), gap)
            gap = False
        elif c.isascii() and c.isdigit():
            match = _NUMBER.match(sql, i)
            assert match is not None
            if match.end() < n and _WORD_CHAR.match(sql, match.end()):
                raise QueryRefused(f"malformed number at offset {i}: "
                                   f"{sql[i:match.end() + 10]!r}", code="syntax")
            i, gap = _add(tokens, "number", sql, i, match.end(), gap), False
        elif _WORD.match(sql, i):
            match = _WORD.match(sql, i)
            assert match is not None
            i, gap = _add(tokens, "word", sql, i, match.end(), gap), False
        elif c in _SYMBOLS:
            i, gap = _add(tokens, "symbol", sql, i, i + 1, gap), False
        elif c in _REFUSED:
            raise QueryRefused(f"{_REFUSED[c]} (offset {i})", code="lexical")
        elif not c.isascii():
            raise QueryRefused(
                f"character {c!r} at offset {i}: outside strings and quoted names only "
                "ASCII is accepted (engines read other letters and spaces differently)",
                code="lexical")
        else:
            raise QueryRefused(f"character {c!r} at offset {i} is not accepted", code="lexical")
    return tokens


def canonical(tokens: list[Token]) -> str:
    """The SQL of ``tokens`` without comments: one space where there was a gap.

    What the engine reads is unchanged (a comment separates tokens as a space does), and
    a checker reading this text has no comment to misread.
    """
    return "".join((" " if token.gap and k else "") + token.text
                   for k, token in enumerate(tokens))


def enclosed(sql: str) -> list[Token]:
    """The tokens of ``sql`` if it can stand inside ``( ... )``, else refuse it.

    That is one statement that cannot close the parentheses around it: no ``;``, never
    more ``)`` than ``(``. The embedded engine runs every statement of a string and takes
    settings from a ``SETTINGS`` clause, so a read is run as ``SELECT * FROM (<sql>)
    SETTINGS ...``; this makes sure that clause binds the whole of ``sql``.
    """
    tokens = tokenize(sql)
    depth = 0
    for token in tokens:
        if token.kind != "symbol":
            continue
        if token.text == ";":
            raise QueryRefused("one statement only: remove the `;`", code="statements")
        depth += {"(": 1, ")": -1}.get(token.text, 0)
        if depth < 0:
            raise QueryRefused(f"unbalanced `)` at offset {token.start}", code="syntax")
    if depth:
        raise QueryRefused("unbalanced `(`: a parenthesis is not closed", code="syntax")
    return tokens


def _add(tokens: list[Token], kind: TokenKind, sql: str, start: int, end: int,
         gap: bool) -> int:
    tokens.append(Token(kind, sql[start:end], start, gap))
    return end


def _line_comment_end(sql: str, start: int) -> int:
    # ClickHouse ends a -- comment at \n only; a lone \r would end it in other readers.
    end = sql.find("\n", start)
    end = len(sql) if end < 0 else end
    body = sql[start:end]
    if re.search(r"\r(?!\n)", body + "\n"):
        raise QueryRefused(f"a carriage return inside the -- comment at offset {start}: "
                           "end lines with \\n", code="lexical")
    return end


def _block_comment_end(sql: str, start: int) -> int:
    end = sql.find("*/", start + 2)
    if end < 0:
        raise QueryRefused(f"the /* comment at offset {start} is not closed", code="lexical")
    if "/*" in sql[start + 2:end]:
        raise QueryRefused(f"nested /* comments (offset {start}) are not accepted: ClickHouse "
                           "versions end them at different places", code="lexical")
    return end + 2


def _quoted_end(sql: str, start: int, quote: str, *, escapes: bool) -> int:
    """End of the string or quoted name opening at ``start``; a doubled quote is one quote.

    Strings take backslash escapes as ClickHouse does (the next character, whatever it
    is, is part of the string). Names do not: what a backslash means in a name differs
    between readers, and no table or column of ours needs one.
    """
    i, n = start + 1, len(sql)
    while i < n:
        c = sql[i]
        if c == "\\":
            if not escapes:
                raise QueryRefused(f"a backslash in the quoted name at offset {start} is not "
                                   "accepted", code="lexical")
            i += 2
        elif c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    what = "string" if escapes else "quoted name"
    raise QueryRefused(f"the {what} at offset {start} is not closed", code="lexical")
