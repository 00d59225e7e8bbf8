"""TLS for the control plane: a local CA and a server certificate, or the site's own pair.

Files land in ROOT/etc/sparkplane/tls/: `ca.crt` (give it to clients), `ca.key` (0600, only
needed to issue again), `server.crt` and `server.key` (0600), which the control plane serves.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.core.security import write_private_file

CA_DAYS = 3650
SERVER_DAYS = 825  # the CA/Browser Forum ceiling that clients still enforce


class TlsError(ValueError):
    """A certificate or key is unusable; the message says which and why."""


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(path, pem)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sparkplane appliance"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def parse_sans(names: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses, e.g. from the inventory's host names and addresses."""
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or " " in name:
                raise TlsError(f"not a DNS name or IP address: {name!r}") from None
            sans.append(x509.DNSName(name))
    if not sans:
        raise TlsError("at least one subject alternative name is needed")
    return sans


def create_local_ca(tls_dir: Path, now: datetime.datetime | None = None) -> x509.Certificate:
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Sparkplane local CA"))
        .issuer_name(_name("Sparkplane local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(tls_dir / "ca.key", key)
    (tls_dir / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def issue_server_certificate(tls_dir: Path, names: list[str]) -> x509.Certificate:
    """Issue server.crt/server.key from the local CA (created first if missing)."""
    if not (tls_dir / "ca.crt").is_file():
        create_local_ca(tls_dir)
    ca_cert = x509.load_pem_x509_certificate((tls_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((tls_dir / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{tls_dir / 'ca.key'} is not the local CA's EC key")
    sans = parse_sans(names)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(tls_dir / "server.key", key)
    (tls_dir / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def import_certificate(tls_dir: Path, cert_path: Path, key_path: Path) -> x509.Certificate:
    """Install the site's own certificate and key after checking that they belong together."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsError(f"cannot read the certificate or key: {exc}") from exc
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise TlsError(f"{key_path} is not the private key of {cert_path}")
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TlsError(
            f"{cert_path} is not valid now (valid {cert.not_valid_before_utc} to "
            f"{cert.not_valid_after_utc})"
        )
    tls_dir.mkdir(parents=True, exist_ok=True)
    (tls_dir / "server.crt").write_bytes(cert_path.read_bytes())
    write_private_file(tls_dir / "server.key", key_path.read_bytes())
    return cert
