"""Test certificates for the TLS checks, made with ``cryptography`` (no files under version
control, nothing valid outside a test run): a weak expired self-signed one and a test CA with a
strong leaf."""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertFiles:
    cert: Path  # the leaf (PEM)
    key: Path  # its private key (PEM, unencrypted)
    ca: Path | None = None  # the CA that signed it, when not self-signed


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotbaseline tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: PrivateKey) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return CertFiles(cert_path, key_path)


def weak_self_signed(directory: Path, address: str, *, days_ago: int = 400,
                     stem: str = "weak") -> CertFiles:
    """RSA-1024, SHA-1, self-signed, expired ``days_ago - 365`` days ago, CN only (no SAN).

    cryptography no longer signs with SHA-1, so the certificate it builds is re-signed by the
    openssl CLI with its dates kept."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    start = datetime.now(UTC) - timedelta(days=days_ago)
    cert = (x509.CertificateBuilder().subject_name(_name(address)).issuer_name(_name(address))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=365))
            .sign(key, hashes.SHA256()))
    files = _write(directory, stem, cert, key)
    subprocess.run(["openssl", "x509", "-in", str(files.cert), "-signkey", str(files.key),
                    "-sha1", "-preserve_dates", "-out", str(files.cert)],
                   check=True, capture_output=True, timeout=20)
    return files


def ca_signed(directory: Path, addresses: list[str], dns_names: tuple[str, ...] = (),
              stem: str = "strong") -> CertFiles:
    """A P-256 leaf naming ``addresses`` (IP SANs) and ``dns_names``, valid now, signed with
    SHA-256 by a fresh test CA (written as ``<stem>-ca.crt``)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"iotbaseline test CA {stem}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    names += [x509.DNSName(name) for name in dns_names]
    leaf = (x509.CertificateBuilder().subject_name(_name(addresses[0] if addresses else
                                                         dns_names[0]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    files = _write(directory, stem, leaf, key)
    ca_path = directory / f"{stem}-ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return CertFiles(files.cert, files.key, ca_path)
