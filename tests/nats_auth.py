"""Credentials for the NATS security tests, made on the spot: TLS certificates (trustme),
NKey pairs, and the operator / account / user JWTs of decentralised auth with a `.creds` file.

The JWTs are built the way nats-server expects them (header `ed25519-nkey`, claims signed by
the issuer's NKey), so the tests need no `nsc` binary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys
import trustme


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a CA the server does not trust
    other_client_key: Path


def tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("bridge-client")
    stranger = trustme.CA().issue_cert("stranger")
    files = TlsFiles(*(directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem",
                                                      "client.key", "stranger.pem", "stranger.key")))  # fmt: skip
    ca.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.server_key))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    stranger.private_key_pem.write_to_path(str(files.other_client_key))
    stranger.cert_chain_pems[0].write_to_path(str(files.other_client_cert))
    return files


def new_keypair(prefix: int) -> tuple[bytes, str]:
    """(seed, public key) of a fresh NKey of the given kind (nkeys.PREFIX_BYTE_*)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return bytes(seed), pair.public_key.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer_seed: bytes, subject: str, name: str, nats: dict[str, object]) -> str:
    issuer = nkeys.from_seed(bytearray(issuer_seed))
    claims: dict[str, object] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
    }
    claims["nats"] = {**nats, "version": 2}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


@dataclass(frozen=True)
class Decentralised:
    server_conf: str  # the operator/resolver part of a nats-server config
    creds_file: Path


def decentralised_auth(directory: Path) -> Decentralised:
    """An operator, one JetStream-enabled account and one user in it, with its .creds file."""
    operator_seed, operator_pub = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account_seed, account_pub = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user_pub = new_keypair(nkeys.PREFIX_BYTE_USER)
    operator_jwt = jwt(operator_seed, operator_pub, "test-operator", {"type": "operator"})
    limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
              "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}  # fmt: skip
    account_jwt = jwt(operator_seed, account_pub, "bridge-account", {"type": "account", "limits": limits})
    user_limits = {"subs": -1, "data": -1, "payload": -1}
    user_jwt = jwt(account_seed, user_pub, "bridge", {"type": "user", **user_limits})
    directory.mkdir(parents=True, exist_ok=True)
    creds = directory / "bridge.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    _, system_pub = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    system_jwt = jwt(operator_seed, system_pub, "SYS", {"type": "account"})
    conf = (
        f"operator: {operator_jwt}\nsystem_account: {system_pub}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {account_pub}: {account_jwt}\n  {system_pub}: {system_jwt}\n}}\n"
    )
    return Decentralised(conf, creds)
