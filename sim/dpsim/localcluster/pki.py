"""The local cluster's PKI: one CA, the certificates every component presents, and the SA key pair.

Owns the files under ``<state_dir>/pki``: what is in them, how they are made (``cryptography``,
ECDSA P-256 for TLS, RSA 2048 for service-account tokens) and when they are remade (missing,
unreadable or close to expiry). The simulated kubelet gets the CA's paths and calls
:func:`load_ca` and :func:`issue_serving_cert` for its own serving certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dpsim.kubelet.ips import all_veth_host_addresses

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Long enough that a state dir kept for months still works; certs are remade when close to expiry.
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
# Remake everything when any certificate has less than this left, so nothing expires mid-session.
RENEW_BEFORE = dt.timedelta(days=7)
# Backdated so a client whose clock is slightly behind still accepts a certificate made just now.
CLOCK_SKEW = dt.timedelta(minutes=5)

APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 10.0.0.1 is the first address of --service-cluster-ip-range=10.0.0.0/24: the `kubernetes` Service.
# With a network namespace (``netns``) the API server listens on its veth pair's host end: every
# block's is named, so one PKI serves whichever block a start gets.
APISERVER_IPS = ("127.0.0.1", "10.0.0.1", *all_veth_host_addresses())


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both as PEM; the key file is 0600 from the moment it exists."""
        write_file(key_path, self.key_pem(), private=True)
        write_file(cert_path, self.cert_pem())

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertKey:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{key_path}: unsupported key type {type(key).__name__}")
        return cls(cert, key)


def write_file(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a PEM behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # O_CREAT with 0600 rather than chmod afterwards: a key must never be readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
        if private:
            os.fchmod(fd, 0o600)  # O_CREAT does not change the mode of a leftover temp file
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_ca(common_name: str = "dpctl-local-ca", *, valid_for: dt.timedelta = CA_VALIDITY) -> CertKey:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def load_ca(cert_path: Path | str, key_path: Path | str) -> CertKey:
    """Load a CA written by :func:`ensure_pki` (what `sim-kubelet --ca-cert/--ca-key` point at)."""
    return CertKey.load(Path(cert_path), Path(key_path))


def _issue(
    ca: CertKey,
    subject: x509.Name,
    usage: Sequence[x509.ObjectIdentifier],
    sans: Sequence[x509.GeneralName],
    valid_for: dt.timedelta,
) -> CertKey:
    key = _new_key()
    now = _now()
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        # Never outlive the CA: a verifier would reject the chain at the CA's expiry anyway.
        .not_valid_after(min(now + valid_for, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # ECDSA keys sign; keyEncipherment is an RSA key-exchange bit and does not apply.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def issue_serving_cert(
    ca: CertKey,
    ips: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address],
    dns: Sequence[str],
    *,
    common_name: str | None = None,
    valid_for: dt.timedelta = LEAF_VALIDITY,
) -> CertKey:
    """A TLS server certificate for the given IP and DNS SANs (kubelet, KCM, scheduler, apiserver).

    The subject CN defaults to the first DNS name or IP; verifiers only look at the SANs.
    """
    if not ips and not dns:
        raise ValueError("a serving certificate needs at least one IP or DNS name")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cn = common_name or (dns[0] if dns else str(ips[0]))
    return _issue(ca, _name(cn), [ExtendedKeyUsageOID.SERVER_AUTH], sans, valid_for)


def issue_client_cert(
    ca: CertKey,
    common_name: str,
    organizations: Sequence[str] = (),
    *,
    valid_for: dt.timedelta = LEAF_VALIDITY,
) -> CertKey:
    """A TLS client certificate: Kubernetes reads the user from CN and the groups from O."""
    return _issue(ca, _name(common_name, organizations), [ExtendedKeyUsageOID.CLIENT_AUTH], [], valid_for)


@dataclass(frozen=True)
class PKIPaths:
    """Where each PEM lives under one directory. Names follow kubeadm's where there is one."""

    dir: Path

    def _p(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_crt(self) -> Path:
        return self._p("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self._p("ca.key")

    @property
    def apiserver_crt(self) -> Path:
        return self._p("apiserver.crt")

    @property
    def apiserver_key(self) -> Path:
        return self._p("apiserver.key")

    @property
    def admin_crt(self) -> Path:
        return self._p("admin.crt")

    @property
    def admin_key(self) -> Path:
        return self._p("admin.key")

    @property
    def kubelet_client_crt(self) -> Path:
        return self._p("apiserver-kubelet-client.crt")

    @property
    def kubelet_client_key(self) -> Path:
        return self._p("apiserver-kubelet-client.key")

    @property
    def controller_manager_crt(self) -> Path:
        return self._p("controller-manager.crt")

    @property
    def controller_manager_key(self) -> Path:
        return self._p("controller-manager.key")

    @property
    def controller_manager_serving_crt(self) -> Path:
        return self._p("controller-manager-serving.crt")

    @property
    def controller_manager_serving_key(self) -> Path:
        return self._p("controller-manager-serving.key")

    @property
    def scheduler_crt(self) -> Path:
        return self._p("scheduler.crt")

    @property
    def scheduler_key(self) -> Path:
        return self._p("scheduler.key")

    @property
    def scheduler_serving_crt(self) -> Path:
        return self._p("scheduler-serving.crt")

    @property
    def scheduler_serving_key(self) -> Path:
        return self._p("scheduler-serving.key")

    @property
    def front_proxy_ca_crt(self) -> Path:
        return self._p("front-proxy-ca.crt")

    @property
    def front_proxy_ca_key(self) -> Path:
        return self._p("front-proxy-ca.key")

    @property
    def front_proxy_client_crt(self) -> Path:
        return self._p("front-proxy-client.crt")

    @property
    def front_proxy_client_key(self) -> Path:
        return self._p("front-proxy-client.key")

    @property
    def sa_key(self) -> Path:
        return self._p("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self._p("sa.pub")

    def cert_key_pairs(self) -> list[tuple[Path, Path]]:
        """Every (certificate, key) pair, CAs first."""
        return [
            (self.ca_crt, self.ca_key),
            (self.front_proxy_ca_crt, self.front_proxy_ca_key),
            (self.apiserver_crt, self.apiserver_key),
            (self.admin_crt, self.admin_key),
            (self.kubelet_client_crt, self.kubelet_client_key),
            (self.controller_manager_crt, self.controller_manager_key),
            (self.controller_manager_serving_crt, self.controller_manager_serving_key),
            (self.scheduler_crt, self.scheduler_key),
            (self.scheduler_serving_crt, self.scheduler_serving_key),
            (self.front_proxy_client_crt, self.front_proxy_client_key),
        ]


ADMIN_USER = "dpctl-admin"
FRONT_PROXY_CLIENT = "front-proxy-client"
LOOPBACK_SANS: tuple[tuple[str, ...], tuple[str, ...]] = (("127.0.0.1",), ("localhost",))


def _usable(paths: PKIPaths) -> bool:
    """True when every file is there, parses, and stays valid for at least RENEW_BEFORE."""
    try:
        deadline = _now() + RENEW_BEFORE
        pairs = {crt: CertKey.load(crt, key) for crt, key in paths.cert_key_pairs()}
        if any(p.cert.not_valid_after_utc < deadline for p in pairs.values()):
            return False
        # A crash between writes could leave leaves of a new CA next to the old one: check the chain.
        for crt, pair in pairs.items():
            if crt in (paths.ca_crt, paths.front_proxy_ca_crt):
                continue
            issuer = paths.front_proxy_ca_crt if crt == paths.front_proxy_client_crt else paths.ca_crt
            pair.cert.verify_directly_issued_by(pairs[issuer].cert)
        # A PKI from before an address was added to APISERVER_IPS: clients using it would fail.
        sans = pairs[paths.apiserver_crt].cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        if not {ipaddress.ip_address(a) for a in APISERVER_IPS} <= set(
            sans.value.get_values_for_type(x509.IPAddress)
        ):
            return False
        serialization.load_pem_private_key(paths.sa_key.read_bytes(), password=None)
        serialization.load_pem_public_key(paths.sa_pub.read_bytes())
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return True


def ensure_pki(pki_dir: Path) -> PKIPaths:
    """Make the whole PKI under ``pki_dir`` unless a usable one is there already.

    Kept across restarts so kubeconfigs and trust already handed out stay valid; remade as a whole
    (never piecemeal) because every leaf must chain to the one CA on disk.
    """
    paths = PKIPaths(pki_dir)
    if _usable(paths):
        return paths
    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    ca = new_ca()
    front_proxy_ca = new_ca("dpctl-front-proxy-ca")
    ips, dns = LOOPBACK_SANS
    issued = {
        paths.apiserver_crt: issue_serving_cert(
            ca, APISERVER_IPS, APISERVER_DNS_NAMES, common_name="kube-apiserver"
        ),
        paths.admin_crt: issue_client_cert(ca, ADMIN_USER, ["system:masters"]),
        # What the apiserver presents to kubelets (logs, exec); system:masters lets it do anything there.
        paths.kubelet_client_crt: issue_client_cert(ca, "kube-apiserver-kubelet-client", ["system:masters"]),
        # The KCM and scheduler use their own users, so RBAC's bootstrap roles apply as in production.
        paths.controller_manager_crt: issue_client_cert(ca, "system:kube-controller-manager"),
        paths.controller_manager_serving_crt: issue_serving_cert(
            ca, ips, dns, common_name="kube-controller-manager"
        ),
        paths.scheduler_crt: issue_client_cert(ca, "system:kube-scheduler"),
        paths.scheduler_serving_crt: issue_serving_cert(ca, ips, dns, common_name="kube-scheduler"),
        paths.front_proxy_client_crt: issue_client_cert(front_proxy_ca, FRONT_PROXY_CLIENT),
    }
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Keys of the leaves first, CA last: _usable() fails on a half-written set, so a crash redoes it all.
    for crt, key in paths.cert_key_pairs()[2:]:
        issued[crt].write(crt, key)
    write_file(
        paths.sa_key,
        sa.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        private=True,
    )
    write_file(
        paths.sa_pub,
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    front_proxy_ca.write(paths.front_proxy_ca_crt, paths.front_proxy_ca_key)
    ca.write(paths.ca_crt, paths.ca_key)
    return paths
