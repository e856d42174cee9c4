"""``touchpoint customer``: what a call-center agent sees of a customer."""

from __future__ import annotations

import json
from typing import Any

import click

from touchpoint.commands.common import fail, settings_or_exit, text_table

__all__ = ["customer", "customer_text"]


@click.command()
@click.argument("identifier")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def customer(identifier: str, as_json: bool) -> None:
    """Look a customer up by any identifier: customer id, phone, e-mail or cookie id.

    Shows the profile, the customer's identifiers (e-mail and phone hashed) and the last
    20 touchpoints: what a call-center agent sees when the customer calls. Asks the
    worker at TOUCHPOINT_WEB_PORT, which routes to the worker holding the customer.
    """
    from touchpoint.worker_api import WorkerAPI, WorkerRefused, WorkerUnreachable

    api = WorkerAPI(settings_or_exit())
    try:
        found = api.call(api.path_of("/customers/", identifier))
    except WorkerRefused as exc:
        known = " (set TOUCHPOINT_API_TOKEN to a token the worker knows)"
        fail(f"{exc}{known if exc.status == 401 else ''}")
    except WorkerUnreachable as exc:
        fail(f"{exc}: start one with `touchpoint worker` or set TOUCHPOINT_WEB_PORT")
    if as_json:
        click.echo(json.dumps(found, indent=1, ensure_ascii=False))
        return
    click.echo(customer_text(found))


def customer_text(found: dict[str, Any]) -> str:
    """The worker's answer about a customer (``/customers/ID``) as the lines the CLI prints."""
    from datetime import UTC, datetime

    def when(ms: int | None) -> str:
        if not ms:
            return "-"
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")

    profile = found.get("profile") or {}
    lines = [f"customer   {found['customer_id']}"]
    if profile:
        contacts = ", ".join(f"{k} {v}" for k, v in sorted(profile["contacts_by_channel"].items()))
        satisfaction = profile.get("avg_satisfaction")
        lines += [
            f"stage      {profile['lifecycle_stage']}, tier {profile['value_tier']}",
            f"seen       {when(profile['first_seen'])} .. {when(profile['last_seen'])}",
            f"orders     {profile['orders']}, spend {profile['total_spend']:,.2f} "
            f"(12 months {profile['spend_12m']:,.2f}), returns {profile['returns']}",
            f"contacts   {contacts}",
            f"rating     {'-' if satisfaction is None else satisfaction} of 5, complaints "
            f"{profile['complaints']}, open signals {profile['open_signals']}",
        ]
    else:
        lines.append("profile    (not built yet)")
    lines.append(f"ids        {', '.join(found['identifiers'])}")
    if found.get("merged_ids"):
        lines.append(f"merged     {', '.join(found['merged_ids'])}")
    touchpoints = found.get("touchpoints") or []
    if touchpoints and "error" not in touchpoints[0]:
        lines.append("last touchpoints:")
        rows = [[str(t["occurred_at"])[:19].replace("T", " "), t["channel"], t["type"],
                 t.get("store_id") or t.get("campaign_id") or "",
                 "" if t.get("amount") is None else f"{t['amount']:,.2f}",
                 t.get("outcome") or ""] for t in touchpoints]
        lines.append(text_table(["time (UTC)", "channel", "type", "where", "amount", "outcome"],
                            rows))
    return "\n".join(lines)
