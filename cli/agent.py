"""`carechain agent`: the patient's co-signing agent, and with `--serve` the patient's side
of the web console."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click
from rich.markup import escape

from carechain.cli.context import (
    flow_options,
    make_context,
)
from carechain.cli.output import console, error_console
from carechain.config.genesis import load_genesis
from carechain.config.node import parse_host_port
from carechain.node.light.client import LightClient, NodeSource
from carechain.node.wallet.agent_duties import decision_id, verified_pass
from carechain.node.wallet.agent_service import PatientAgent, serve_agent


@click.command()
@flow_options
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
@click.option("--key", "key_name", required=True, help="The patient key the agent signs with.")
@click.option(
    "--other-key",
    "other_names",
    multiple=True,
    help="The patient's other key names (their signatures do not count as initiators).",
)
@click.option("--once", is_flag=True, help="One pass, then exit (for scripts and tests).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600))
@click.option(
    "--serve",
    metavar="HOST:PORT",
    help="Also serve the web console's patient actions here (e.g. 127.0.0.1:26690).",
)
@click.option(
    "--console-origin",
    default="",
    help="The console's origin allowed to call --serve (default: the node's API address).",
)
@click.option(
    "--genesis",
    "genesis_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Your own copy of genesis.json: every state entry the agent acts on or shows is then "
    "proved against a header trusted from it (a light client kept in HOME/light).",
)
def agent(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    rules_path: Path,
    key_name: str,
    other_names: tuple[str, ...],
    once: bool,
    interval: float,
    serve: str | None,
    console_origin: str,
    genesis_path: Path | None,
) -> None:
    """The patient's co-signing agent: signs partials that match its rules; logs every decision
    as a JSON line. With --serve, also the patient's side of the web console: grants,
    revocations, approvals, rules and decrypted downloads, signed here with the patient's keys
    (which never leave this process)."""
    context = make_context(home, api, passphrase_file)
    if genesis_path is not None:
        light_home = home / "light"
        context.light = LightClient(
            load_genesis(genesis_path), light_home, NodeSource(context.client)
        )
    key = context.key(key_name)
    others = [context.key(n) for n in other_names]
    if serve is not None:
        host, port = parse_host_port(serve)
        origin = console_origin or context.client.base_url
        server = PatientAgent(context, [key, *others], rules_path, origin)
        console.print(f"patient agent on http://{host}:{port} for the console at {origin}")
        asyncio.run(serve_agent(server, host, port, interval))
        return
    seen: set[str] = set()
    while True:
        for decision in verified_pass(context, [key, *others], rules_path):
            if decision_id(decision) not in seen:
                seen.add(decision_id(decision))
                click.echo(json.dumps(decision))
                if decision.get("alert") == "not_verified":
                    error_console.print(f"[bold red]{escape(str(decision['reason']))}[/]")
        if once:
            return
        time.sleep(interval)
