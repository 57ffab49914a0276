"""How a node proves who it is to NATS: user/password, token, NKey seed or credentials file, and TLS.

Set once (`--nats-user`, `--nats-tls-ca`, ...) and used by every connection the node makes. Bad combinations
and unreadable files are refused at start-up, naming the option; a server that refuses the credentials or a
certificate that cannot be verified stops start-up too, instead of being retried forever like an outage.
"""

from __future__ import annotations

import importlib.util
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkron_nats.config import ConfigError, Settings
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

    def embedded_server(self) -> ServerSecurity:
        """What the embedded nats-server requires: the same password or token, TLS with the same key pair;
        routes between embedded servers need the same credentials, and mutual TLS when a CA is given."""
        return ServerSecurity(
            self.tls_cert, self.tls_key, self.user, self.password, self.token, tls_ca=self.tls_ca
        )

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
                    "--nats-nkey-seed or --nats-creds"
                )
            return f"the NATS server refused the credentials of {given[0]}: check them"
        return None


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
