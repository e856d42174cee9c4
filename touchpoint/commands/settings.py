"""``touchpoint settings``: every setting, its variable, default and current value."""

from __future__ import annotations

import click

from touchpoint.commands.common import settings_or_exit
from touchpoint.settings import LOCAL, settings_markdown

__all__ = ["show_settings"]


@click.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's configuration table.")
def show_settings(markdown: bool) -> None:
    """Show every setting: its variable, default and current value."""
    if markdown:
        click.echo(settings_markdown())
        return
    from touchpoint.settings import SETTINGS

    current = settings_or_exit(create_secrets=False)  # shows the settings, makes no secret file

    def secret(value: str, file: str) -> str:
        if value != LOCAL:
            return "(set)"
        return "(local file)" if (current.home / file).exists() else \
            "(local file, not made yet)"

    for setting in SETTINGS:
        value = getattr(current, setting.name)
        if setting.name == "pii_salt":  # secrets: never shown
            value = secret(value, "pii_salt")
        elif setting.name == "api_tokens":
            value = ", ".join(f"{name}={secret(token, 'api_token')}"
                              for name, token in value.items())
        elif setting.name == "api_token":
            value = secret(value, "api_token")
        elif setting.name in {"clickhouse_url", "clickhouse_query_url"} and value:
            value = _without_password(value)
        click.echo(f"{setting.env}={value}")
        click.echo(f"    {setting.help} Default: {setting.default or '(empty)'}")


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
