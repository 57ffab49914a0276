"""`dkron-nats nats-credentials`: NATS credentials for the embedded servers' cluster, made from its secret.

Run it on a server (it reads the cluster secret): it writes the `.creds` file an agent or a trigger client
logs in with, or a new cluster secret for a cluster of embedded servers.
"""

from __future__ import annotations

from pathlib import Path

import click

from dkron_nats import natsroles
from dkron_nats.config import ENV_PREFIX
from dkron_nats.names import is_token
from dkron_nats.natsjwt import (
    SECRET_FILE_NAME,
    ClusterKeys,
    SecretError,
    new_secret,
    read_secret,
    user_credentials,
    write_private,
)


@click.command("nats-credentials")
@click.option("--role", type=click.Choice(natsroles.ROLES), help="Who logs in with the credentials.")
@click.option(
    "--node", default="", help="The agent's --node-name (role agent): it may act for that node only."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dkron.data"),
    envvar=ENV_PREFIX + "DATA_DIR",
    show_default=True,
    help="A server's data dir: the cluster secret is its nats-secret file.",
)
@click.option(
    "--nats-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=ENV_PREFIX + "NATS_SECRET_FILE",
    help="The cluster secret the servers were started with (instead of <data-dir>/nats-secret).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the credentials to this file (mode 0600) instead of printing them.",
)
@click.option(
    "--new-secret",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Create a new random cluster secret in this file (mode 0600) and exit; give it to every server "
    "with --nats-secret-file.",
)
def nats_credentials(
    role: str | None,
    node: str,
    data_dir: Path,
    nats_secret_file: Path | None,
    out: Path | None,
    new_secret: Path | None,
) -> None:
    """Make NATS credentials (a .creds file) for a server, an agent or a trigger client.

    \b
    An agent then joins with:
      dkron-nats agent --node-name NAME --nats-url nats://SERVER:4222 --nats-creds FILE
    """
    if new_secret is not None:
        _create_secret(new_secret)
        return
    if role is None:
        raise click.UsageError("--role is missing: server, agent or trigger (or --new-secret FILE)")
    if role == "agent" and not node:
        raise click.UsageError("--role agent needs --node: the agent's --node-name")
    if node and not is_token(node):
        raise click.BadParameter(f"{node!r}: letters, digits, '_' and '-' only (max 64)", param_hint="--node")
    secret_path = nats_secret_file or data_dir / SECRET_FILE_NAME
    try:
        keys = ClusterKeys.from_secret(read_secret(secret_path))
    except SecretError as exc:
        where = "--nats-secret-file" if nats_secret_file else "the cluster secret"
        raise click.ClickException(
            f"{where} {exc}: run this on a server that has started once (its --data-dir), or give "
            "--nats-secret-file"
        ) from None
    name = node or role
    creds = user_credentials(keys, name, natsroles.for_role(role, node))
    if out is None:
        click.echo(creds, nl=False)
        return
    write_private(out, creds)
    click.echo(f"wrote {role} credentials for {name} to {out}", err=True)


def _create_secret(path: Path) -> None:
    try:
        new_secret(path)
    except FileExistsError:
        raise click.ClickException(f"{path} exists already: a secret is never overwritten") from None
    click.echo(
        f"wrote a new cluster secret to {path}: give it to every server with --nats-secret-file", err=True
    )
