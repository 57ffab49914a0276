"""How a node proves who it is to NATS: user/password, token, NKey seed or credentials file, and TLS.

Set once (`--nats-user`, `--nats-tls-ca`, ...) and used by every connection the node makes. Bad combinations
and unreadable files are refused at start-up, naming the option; a server that refuses the credentials or a
certificate that cannot be verified stops start-up too, instead of being retried forever like an outage.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import RawCredentials

from dkron_nats import natsroles
from dkron_nats.config import ConfigError, Settings
from dkron_nats.natsjwt import (
    SECRET_FILE_NAME,
    ClusterKeys,
    SecretError,
    ensure_secret,
    read_secret,
    user_credentials,
)
from dkron_nats.natsserver import ServerSecurity


class NatsAccessError(RuntimeError):
    """NATS refused this node (credentials or TLS): retrying cannot help, the configuration must change."""


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    user: str = ""
    password: str = ""
    token: str = ""
    nkey_seed: Path | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str = ""
    creds_text: str = ""
    """A `.creds` file's content, held in memory: the embedded server's node logs in with it."""

    def __repr__(self) -> str:  # the dataclass default would print the password and token
        return f"NatsCredentials(methods={self.methods()}, tls={self.tls_enabled})"

    @classmethod
    def from_settings(cls, s: Settings) -> NatsCredentials:
        return cls(
            user=s.nats_user,
            password=s.nats_password,
            token=s.nats_token,
            nkey_seed=s.nats_nkey_seed,
            creds=s.nats_creds,
            tls_ca=s.nats_tls_ca,
            tls_cert=s.nats_tls_cert,
            tls_key=s.nats_tls_key,
            tls_server_name=s.nats_tls_server_name,
        )

    def embedded_server(self, keys: ClusterKeys | None = None) -> ServerSecurity:
        """What the embedded nats-server requires: the same password or token, or else (`keys`) user JWTs
        of the cluster's account; TLS with the same key pair; routes between embedded servers need the
        same credentials (the password derived from the secret), and mutual TLS when a CA is given."""
        return ServerSecurity(
            self.tls_cert, self.tls_key, self.user, self.password, self.token, tls_ca=self.tls_ca, keys=keys
        )

    @property
    def chosen_by_operator(self) -> bool:
        """A password, token, NKey or credentials file was given: the embedded server keeps to it."""
        return bool(self.methods())

    def as_server_of(self, keys: ClusterKeys, node: str) -> NatsCredentials:
        """These options, logging in with a new server-role user JWT of the cluster (kept in memory)."""
        return dataclasses.replace(self, creds_text=user_credentials(keys, node, natsroles.SERVER))

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key or self.tls_server_name)

    def methods(self) -> list[str]:
        """The authentication methods configured, as option names."""
        chosen = {
            "--nats-user/--nats-password": bool(self.user or self.password),
            "--nats-token": bool(self.token),
            "--nats-nkey-seed": self.nkey_seed is not None,
            "--nats-creds": self.creds is not None,
        }
        return [name for name, on in chosen.items() if on]

    def check(self, embedded: bool) -> None:
        """Refuse what cannot work, naming the option. `embedded`: the node starts its own nats-server."""
        methods = self.methods()
        if len(methods) > 1:
            raise ConfigError(f"{' and '.join(methods)} are set: NATS takes one way to log in, choose one")
        if bool(self.user) != bool(self.password):
            missing = "--nats-password" if self.user else "--nats-user"
            raise ConfigError(f"{missing} is missing: --nats-user and --nats-password go together")
        for option, path in self._files():
            _check_readable(option, path)
        if (self.nkey_seed or self.creds) and importlib.util.find_spec("nkeys") is None:
            raise ConfigError("--nats-nkey-seed/--nats-creds need the 'nkeys' package: pip install nkeys")
        if self.nkey_seed:
            _check_nkey_seed(self.nkey_seed)
        if self.creds:
            _check_creds(self.creds)
        if embedded:
            _check_embedded(self)
        self.ssl_context()  # loads the CA and key pair now, so a bad file is reported at start-up

    def _files(self) -> list[tuple[str, Path]]:
        named = {
            "--nats-nkey-seed": self.nkey_seed,
            "--nats-creds": self.creds,
            "--nats-tls-ca": self.tls_ca,
            "--nats-tls-cert": self.tls_cert,
            "--nats-tls-key": self.tls_key,
        }
        return [(option, path) for option, path in named.items() if path is not None]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client side of TLS; None leaves nats-py's default (system CAs, only for `tls://` servers)."""
        if not self.tls_enabled:
            return None
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "--nats-tls-key" if self.tls_cert else "--nats-tls-cert"
            raise ConfigError(f"{missing} is missing: --nats-tls-cert and --nats-tls-key go together")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.tls_ca:
            try:
                context.load_verify_locations(cafile=str(self.tls_ca))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"--nats-tls-ca {self.tls_ca}: not a PEM CA certificate ({exc})") from None
        if self.tls_cert and self.tls_key:
            try:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"--nats-tls-cert {self.tls_cert} / --nats-tls-key {self.tls_key}: not a PEM certificate "
                    f"and its matching private key ({exc})"
                ) from None
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        options: dict[str, Any] = {}
        if self.user:
            options |= {"user": self.user, "password": self.password}
        if self.token:
            options["token"] = self.token
        if self.nkey_seed:
            options["nkeys_seed"] = str(self.nkey_seed)
        if self.creds:
            options["user_credentials"] = str(self.creds)
        if self.creds_text:
            options["user_credentials"] = RawCredentials(self.creds_text)
        if (context := self.ssl_context()) is not None:
            options["tls"] = context
        if self.tls_server_name:
            options["tls_hostname"] = self.tls_server_name
        return options

    def explain_refusal(self, exc: BaseException) -> str | None:
        """What to fix when `exc` means NATS refused us for good (bad credentials or TLS), else None."""
        text = str(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"the NATS server's TLS certificate cannot be verified ({exc.verify_message}): give the CA "
                "that signed it with --nats-tls-ca, and --nats-tls-server-name if it names another host"
            )
        if isinstance(exc, ssl.SSLError):
            return f"the TLS handshake with NATS failed ({text}): check --nats-tls-cert/--nats-tls-key"
        if "authoriz" in text.lower() or "authentication" in text.lower():
            given = self.methods()
            if not given:
                return (
                    "the NATS server requires credentials: set --nats-user/--nats-password, --nats-token, "
                    "--nats-nkey-seed or --nats-creds (for a dkron-nats server's embedded NATS, make the "
                    "--nats-creds file on a server: `dkron-nats nats-credentials --role agent --node NAME`)"
                )
            return f"the NATS server refused the credentials of {given[0]}: check them"
        return None


def cluster_keys(data_dir: Path, secret_file: Path | None) -> ClusterKeys:
    """The keys of the embedded servers' cluster, from `secret_file` (it must exist), or else from
    `<data-dir>/nats-secret` (created with a new random secret on first start)."""
    try:
        if secret_file is not None:
            return ClusterKeys.from_secret(read_secret(secret_file))
        return ClusterKeys.from_secret(ensure_secret(data_dir / SECRET_FILE_NAME))
    except SecretError as exc:
        hint = " (create one with `dkron-nats nats-credentials --new-secret FILE`)" if secret_file else ""
        option = "--nats-secret-file" if secret_file else "the cluster secret"
        raise ConfigError(f"{option} {exc}{hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the cluster secret in {data_dir}: {exc.strerror}") from None


def _check_readable(option: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{option} {path}: no such file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot be read ({exc.strerror})") from None


def _check_nkey_seed(path: Path) -> None:
    import nkeys  # optional: only NKey and JWT users need it

    try:
        nkeys.from_seed(bytearray(path.read_bytes().strip())).wipe()
    except Exception:  # noqa: BLE001 - nkeys raises assorted errors for a bad seed; all mean the same here
        raise ConfigError(
            f"--nats-nkey-seed {path}: not an NKey seed (the file holds one line starting with SU)"
        ) from None


def _check_creds(path: Path) -> None:
    text = path.read_text(errors="replace")
    if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
        raise ConfigError(
            f"--nats-creds {path}: not a NATS credentials file (a user JWT and its NKey seed, as nsc writes)"
        )


def _check_embedded(credentials: NatsCredentials) -> None:
    """The embedded nats-server can require a user/password or a token, and serve TLS with a key pair."""
    if credentials.nkey_seed or credentials.creds:
        raise ConfigError(
            "--nats-nkey-seed/--nats-creds need --nats-url: the embedded nats-server can only require "
            "--nats-user/--nats-password or --nats-token"
        )
    if credentials.tls_enabled and not credentials.tls_cert:
        raise ConfigError(
            "the embedded nats-server serves TLS with --nats-tls-cert and --nats-tls-key: set both "
            "(or drop the other --nats-tls-* options)"
        )


_EMBEDDED_FLAGS = {
    "nats_secret_file": "--nats-secret-file",
    "nats_store_cipher": "--nats-store-cipher",
    "nats_store_key_file": "--nats-store-key-file",
    "nats_store_previous_key_file": "--nats-store-previous-key-file",
}


def check_embedded_options(embedded: dict[str, Any], opts: dict[str, Any]) -> None:
    """Refuse embedded-server options that cannot work together, naming them. `embedded` holds the
    options of `_EMBEDDED_FLAGS`; `opts` the others (URLs, routes, credentials)."""
    given = [flag for name, flag in _EMBEDDED_FLAGS.items() if embedded.get(name)]
    if opts.get("nats_url"):
        if given:
            raise ConfigError(f"{given[0]} configures the embedded nats-server; drop --nats-url")
        return
    explicit = bool(opts.get("nats_user") or opts.get("nats_token"))
    if embedded.get("nats_secret_file") and explicit:
        raise ConfigError(
            "--nats-secret-file and --nats-user/--nats-token are set: the embedded nats-server takes one "
            "way to authenticate clients, choose one"
        )
    if opts.get("nats_routes") and not explicit and not embedded.get("nats_secret_file"):
        raise ConfigError(
            "--nats-routes needs --nats-secret-file: every embedded server of a cluster derives its NATS "
            "credentials, and the routes' password, from the same secret. Copy the first server's "
            "<data-dir>/nats-secret to every server (or create one with `dkron-nats nats-credentials "
            "--new-secret FILE`) and start each with --nats-secret-file FILE"
        )
    cipher, key = embedded.get("nats_store_cipher"), embedded.get("nats_store_key_file")
    if bool(cipher) != bool(key):
        missing = "--nats-store-key-file" if cipher else "--nats-store-cipher"
        raise ConfigError(f"{missing} is missing: --nats-store-cipher and --nats-store-key-file go together")
    if embedded.get("nats_store_previous_key_file") and not key:
        raise ConfigError("--nats-store-previous-key-file needs --nats-store-key-file (the new key)")
    for name in ("nats_secret_file", "nats_store_key_file", "nats_store_previous_key_file"):
        if (path := embedded.get(name)) is not None:
            _check_readable(_EMBEDDED_FLAGS[name], path)
            if name != "nats_secret_file" and not path.read_text().strip():
                raise ConfigError(f"{_EMBEDDED_FLAGS[name]} {path}: the file is empty")


def store_key(path: Path) -> str:
    """The encryption key in `path` (its first line, trimmed)."""
    return path.read_text().strip()


def check_agent_creds(path: Path, node: str) -> None:
    """Refuse agent credentials made for another node (`dkron-nats nats-credentials --node`): with them the
    agent could not take its own run requests. Credentials made elsewhere (nsc) are not checked."""
    try:
        payload = path.read_text().split("-----BEGIN NATS USER JWT-----")[1].split()[0].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        allowed = claims["nats"]["sub"]["allow"]
    except (IndexError, KeyError, TypeError, ValueError):
        return
    # An agent's credentials allow the replies of its own inbox only: `_INBOX.<node>.>`.
    inbox, tail = "_INBOX.", ".>"
    made_for = {
        entry[len(inbox) : -len(tail)]
        for entry in allowed
        if entry.startswith(inbox) and entry.endswith(tail) and entry != inbox + ">"
    }
    if made_for and node not in made_for:
        raise ConfigError(
            f"--nats-creds {path} were made for the agent {', '.join(sorted(made_for))}, not for --node-name "
            f"{node}: make them with `dkron-nats nats-credentials --role agent --node {node}`"
        )
