"""``touchpoint sentiment``: score text as ingest does, and say whether the detector flags it."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click

from touchpoint.commands.common import one_line_errors, settings_or_exit

__all__ = ["sentiment"]


@click.command("sentiment")
@click.argument("texts", nargs=-1)
@click.option("--explain", is_flag=True,
              help="Also show, for Chinese text, the lexicon's score and the n-gram model's "
                   "log-odds of a complaint.")
def sentiment(texts: tuple[str, ...], explain: bool) -> None:
    r"""Score TEXTS as ingest scores notes and comments (no TEXTS or -: a text a stdin line).

    For each text: the score in [-1, 1] (below 0: unhappy), its label, and whether the
    complaint detector counts it as negative text, a score at or below [negative_text]
    threshold in the signal rules (TOUCHPOINT_SIGNAL_RULES, else the packaged
    complaints.toml). Loading the analyzers takes about a second.

    \b
      touchpoint sentiment "等了两个小时还没人处理" "Thanks, all sorted"
      cut -f3 notes.tsv | touchpoint sentiment --explain
    """
    from touchpoint.streams.rules.complaints import Rules
    from touchpoint.streams.rules.sentiment import Sentiment, label

    settings = settings_or_exit(create_secrets=False)
    with one_line_errors():
        threshold = Rules.load(settings.signal_rules or None).negative_text.threshold
    analyzer = Sentiment()
    columns = ["score", "label", "flagged"] + (["lexicon", "model"] if explain else [])
    click.echo("  ".join(f"{c:<8}" for c in columns) + "  text")
    for text in _texts(texts):
        value = analyzer.score(text)
        cells = (["-", "no text", "no"] if value is None else
                 [f"{value:+.3f}", label(value), "yes" if value <= threshold else "no"])
        if explain:
            parts = analyzer.chinese_parts(text)
            cells += ["-", "-"] if parts is None else [f"{parts[0]:+.3f}", f"{parts[1]:+.2f}"]
        click.echo("  ".join(f"{c:<8}" for c in cells) + "  " + _one_line(text))
    click.echo(f"(flagged: score <= {threshold:+.2f}, [negative_text] threshold)", err=True)


def _texts(texts: tuple[str, ...]) -> Iterable[str]:
    if not texts or texts == ("-",):
        return (line.rstrip("\r\n") for line in sys.stdin)
    return texts


def _one_line(text: str) -> str:
    """The text as one line: a newline in it would break the table."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text
