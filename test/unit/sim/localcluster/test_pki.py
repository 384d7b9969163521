"""The local cluster's PKI: every certificate chains to its CA, carries the right names and usages,
keys are private, and ensure_pki reuses a good PKI but remakes a broken or expiring one whole."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dpsim.kubelet.ips import all_veth_host_addresses
from dpsim.localcluster import pki


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> pki.PKIPaths:
    return pki.ensure_pki(tmp_path_factory.mktemp("pki") / "pki")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def test_every_leaf_verifies_against_its_ca(paths: pki.PKIPaths) -> None:
    ca, front_proxy_ca = load(paths.ca_crt), load(paths.front_proxy_ca_crt)
    for crt, _ in paths.cert_key_pairs()[2:]:
        issuer = front_proxy_ca if crt == paths.front_proxy_client_crt else ca
        load(crt).verify_directly_issued_by(issuer)  # raises on a bad signature or issuer
        assert load(crt).not_valid_after_utc <= issuer.not_valid_after_utc


def test_ca_is_a_ca_and_leaves_are_not(paths: pki.PKIPaths) -> None:
    for crt in (paths.ca_crt, paths.front_proxy_ca_crt):
        cert = load(crt)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
    for crt, _ in paths.cert_key_pairs()[2:]:
        cert = load(crt)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_cert_sign


def test_apiserver_serving_cert_names(paths: pki.PKIPaths) -> None:
    cert = load(paths.apiserver_crt)
    dns, ips = sans(cert)
    assert dns == {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    # Loopback, the `kubernetes` Service, and the host end of every block's veth pair (netns).
    assert ips == {"127.0.0.1", "10.0.0.1", *all_veth_host_addresses()}
    assert "198.19.255.1" in ips
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}


@pytest.mark.parametrize(
    ("attr", "cn", "groups"),
    [
        ("admin_crt", "dpctl-admin", ["system:masters"]),
        ("kubelet_client_crt", "kube-apiserver-kubelet-client", ["system:masters"]),
        ("controller_manager_crt", "system:kube-controller-manager", []),
        ("scheduler_crt", "system:kube-scheduler", []),
        ("front_proxy_client_crt", "front-proxy-client", []),
    ],
)
def test_client_certs_name_user_and_groups(
    paths: pki.PKIPaths, attr: str, cn: str, groups: list[str]
) -> None:
    cert = load(getattr(paths, attr))
    assert subject(cert, NameOID.COMMON_NAME) == [cn]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == groups
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.mark.parametrize("attr", ["controller_manager_serving_crt", "scheduler_serving_crt"])
def test_component_serving_certs_cover_loopback(paths: pki.PKIPaths, attr: str) -> None:
    cert = load(getattr(paths, attr))
    assert sans(cert) == ({"localhost"}, {"127.0.0.1"})
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}


def spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_keys_are_private_and_match_certs(paths: pki.PKIPaths) -> None:
    assert stat.S_IMODE(paths.dir.stat().st_mode) == 0o700
    for crt, key in paths.cert_key_pairs():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        pair = pki.CertKey.load(crt, key)
        assert spki(pair.key.public_key()) == spki(pair.cert.public_key())
    assert stat.S_IMODE(paths.sa_key.stat().st_mode) == 0o600
    sa = serialization.load_pem_private_key(paths.sa_key.read_bytes(), password=None)
    pub = serialization.load_pem_public_key(paths.sa_pub.read_bytes())
    assert spki(sa.public_key()) == spki(pub)


def test_tls_handshake_between_apiserver_and_admin(paths: pki.PKIPaths) -> None:
    """OpenSSL (not just cryptography) accepts the chain, the SAN and the client certificate."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.apiserver_crt, paths.apiserver_key)
    server_ctx.load_verify_locations(paths.ca_crt)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_crt))
    client_ctx.load_cert_chain(paths.admin_crt, paths.admin_key)

    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="kubernetes.default.svc")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):  # TLS 1.3 needs 2-3 round trips; 10 is plenty
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    client.write(b"ping")
    s_in.write(c_out.read())
    assert server.read() == b"ping"  # the server has processed the client's certificate by now
    peer = server.getpeercert()
    assert peer and ((("commonName", "dpctl-admin"),) in peer["subject"])


def test_issue_serving_cert_for_kubelet(paths: pki.PKIPaths, tmp_path: Path) -> None:
    ca = pki.load_ca(paths.ca_crt, paths.ca_key)
    leaf = pki.issue_serving_cert(ca, ["127.0.1.2", ipaddress.ip_address("127.0.1.3")], ["gpu-node-1"])
    leaf.write(tmp_path / "kubelet.crt", tmp_path / "kubelet.key")
    cert = load(tmp_path / "kubelet.crt")
    cert.verify_directly_issued_by(ca.cert)
    assert sans(cert) == ({"gpu-node-1"}, {"127.0.1.2", "127.0.1.3"})
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert subject(cert, NameOID.COMMON_NAME) == ["gpu-node-1"]
    assert stat.S_IMODE((tmp_path / "kubelet.key").stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="at least one"):
        pki.issue_serving_cert(ca, [], [])


def test_ensure_pki_reuses_a_good_pki(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path / "pki")
    before = {p: p.read_bytes() for pair in first.cert_key_pairs() for p in pair}
    pki.ensure_pki(tmp_path / "pki")
    assert {p: p.read_bytes() for p in before} == before


def test_ensure_pki_remakes_a_broken_pki_whole(tmp_path: Path) -> None:
    paths = pki.ensure_pki(tmp_path / "pki")
    old_ca = paths.ca_crt.read_bytes()
    paths.admin_key.write_bytes(b"garbage")
    pki.ensure_pki(tmp_path / "pki")
    assert paths.ca_crt.read_bytes() != old_ca  # a new CA, and every leaf re-issued under it
    load(paths.admin_crt).verify_directly_issued_by(load(paths.ca_crt))


def test_ensure_pki_remakes_a_pki_whose_apiserver_cert_lacks_an_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pki, "APISERVER_IPS", ("127.0.0.1",))
    paths = pki.ensure_pki(tmp_path / "pki")  # as one made before the veth addresses were added
    monkeypatch.undo()
    old = paths.apiserver_crt.read_bytes()
    pki.ensure_pki(tmp_path / "pki")
    assert paths.apiserver_crt.read_bytes() != old
    assert "198.19.255.1" in sans(load(paths.apiserver_crt))[1]


def test_ensure_pki_remakes_leaves_of_another_ca(tmp_path: Path) -> None:
    paths = pki.ensure_pki(tmp_path / "pki")
    pki.new_ca().write(paths.ca_crt, paths.ca_key)  # as if a crash left a CA without its leaves
    pki.ensure_pki(tmp_path / "pki")
    load(paths.apiserver_crt).verify_directly_issued_by(load(paths.ca_crt))


def test_ensure_pki_renews_before_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = pki.ensure_pki(tmp_path / "pki")
    old = paths.apiserver_crt.read_bytes()
    monkeypatch.setattr(pki, "RENEW_BEFORE", pki.LEAF_VALIDITY * 2)
    pki.ensure_pki(tmp_path / "pki")
    assert paths.apiserver_crt.read_bytes() != old
