"""Throw-away certificate authorities and certificates for the TLS tests, made with the openssl
command line (the project does not depend on the ``cryptography`` package just for tests)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# Short-lived on purpose: these exist for one test run.
DAYS = "2"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A self-signed CA that issues server and client certificates into its directory."""

    name: str
    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.name}.key"

    @classmethod
    def create(cls, directory: Path, name: str = "ca") -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls(name, directory)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(ca.key), "-out", str(ca.cert), "-days", DAYS, "-subj", f"/CN=oicp-p2p test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return ca

    def issue(self, name: str, common_name: str, *, server: bool = False, san: list[str] | None = None) -> Issued:
        """A leaf certificate: ``server`` for 127.0.0.1/localhost (serverAuth), else a client certificate
        (clientAuth) whose subject CN (and ``san`` entries, e.g. ``DNS:x`` or ``URI:y``) carry the identity."""
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        csr = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        alt_names = ["IP:127.0.0.1", "DNS:localhost"] if server else []
        alt_names += san or []
        lines = ["basicConstraints=critical,CA:FALSE", f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}"]
        if alt_names:
            lines.append("subjectAltName=" + ",".join(alt_names))
        extensions.write_text("\n".join(lines) + "\n")
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(issued.key), "-out", str(csr), "-subj", f"/CN={common_name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key), "-CAcreateserial",
            "-out", str(issued.cert), "-days", DAYS, "-extfile", str(extensions),
        )  # fmt: skip
        return issued
