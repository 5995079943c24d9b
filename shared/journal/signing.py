"""The node's Ed25519 key and the detached signature of an exported journal bundle.

The signature is over the bundle's exact bytes, base64 in a file of its own; the public key is PEM
(SubjectPublicKeyInfo), served by the internal API (``GET /journal/public-key``) for partners to keep.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyError_(Exception):
    """A key file that cannot be read or is no Ed25519 key."""


def generate(private_file: Path, public_file: Path | None = None) -> str:
    """Write a new private key (mode 0600; an existing file is never overwritten); the public key PEM."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = public_pem(key)
    if public_file is not None:
        public_file.write_text(public)
    return public


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: not a readable PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: not an Ed25519 key")
    return key


def load_public(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_("not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """The detached signature of ``data``, base64."""
    return base64.b64encode(key.sign(data)).decode("ascii")


def verify(public: Ed25519PublicKey, data: bytes, signature_b64: str | bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64, validate=False), data)
    except (InvalidSignature, ValueError):
        return False
    return True
