"""TLS contexts for servers and clients (pyOpenSSL through Twisted).

Server contexts are :class:`twisted.internet.ssl.CertificateOptions` (pass them as
``ssl_context`` to ``tcp.start_server`` / ``http.start_server``). Client contexts
are :class:`ClientContext`, which is also a Twisted
:class:`~twisted.web.iweb.IPolicyForHTTPS` (usable as an ``Agent``'s
``contextFactory``). Hostname verification (service-identity) is on by default;
``insecure=True`` turns every check off, explicitly.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from typing import Any, Union

from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet import ssl as tssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = [
    "ClientContext",
    "PemSource",
    "SelfSignedOptions",
    "client_context",
    "client_creator",
    "self_signed_context",
    "self_signed_pem",
    "server_context",
]

#: A certificate or key: a path (``str``/``os.PathLike``) or PEM ``bytes``.
PemSource = Union[str, bytes, "os.PathLike[str]"]


def _read_pem(source: Any, what: str) -> bytes:
    """PEM bytes from PEM bytes or a path.

    :raises ValueError: naming ``source`` if it is neither.
    """
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        if b"-----BEGIN" in data:
            return data
        source = os.fsdecode(data)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as e:
            raise ValueError(f"cannot read the {what} {source!r}: {e.strerror}") from e
    raise ValueError(f"the {what} must be a path or PEM bytes, not {source!r}")


def _load_certs(data: bytes, what: str) -> list[Any]:
    from cryptography import x509

    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError as e:
        raise ValueError(f"the {what} is not a PEM certificate: {e}") from e


def _load_key(data: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"the key is not an unencrypted PEM private key: {e}") from e


class SelfSignedOptions(tssl.CertificateOptions):
    """A server context with a fresh self-signed certificate.

    :ivar certificate_pem: the certificate, to give clients as ``trust_roots``.
    """

    certificate_pem: bytes


def self_signed_pem(hostname: str = "localhost") -> tuple[bytes, bytes]:
    """A new self-signed certificate and its key for ``hostname``, as PEM ``(cert, key)``.

    The certificate names ``hostname`` (DNS or IP); ``"localhost"`` also covers
    127.0.0.1 and ::1. Valid from one day ago for 30 days. EC P-256 key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if not isinstance(hostname, str) or not hostname:
        raise ValueError(f"hostname must be a non-empty str, not {hostname!r}")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        names.append(x509.DNSName(hostname))
    if hostname == "localhost":
        names += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def self_signed_context(hostname: str = "localhost") -> SelfSignedOptions:
    """A server context with a self-signed certificate made now (development and tests).

    :returns: a :class:`SelfSignedOptions`; clients trust it with
        ``client_context(trust_roots=ctx.certificate_pem)`` or ``insecure=True``.
    :raises ValueError: for an empty ``hostname``.
    """
    cert_pem, key_pem = self_signed_pem(hostname)
    cert = _load_certs(cert_pem, "certificate")[0]
    options = SelfSignedOptions(privateKey=_load_key(key_pem), certificate=cert)
    options.certificate_pem = cert_pem
    return options


def server_context(
    cert: PemSource,
    key: PemSource,
    chain: PemSource | Sequence[PemSource] | None = None,
) -> tssl.CertificateOptions:
    """A server context from a certificate and its private key.

    :param cert: the certificate (path or PEM); further certificates in the same
        PEM are used as the chain.
    :param key: its unencrypted private key (path or PEM).
    :param chain: intermediate certificates: one path/PEM (may hold several) or a list.
    :raises ValueError: naming an unreadable or malformed input, or a key that does
        not match the certificate.
    """
    certs = _load_certs(_read_pem(cert, "certificate"), "certificate")
    private_key = _load_key(_read_pem(key, "key"))
    extra = certs[1:]
    if chain is not None:
        sources = [chain] if isinstance(chain, (str, bytes, bytearray, os.PathLike)) else list(chain)
        for src in sources:
            extra += _load_certs(_read_pem(src, "chain"), "chain")
    if certs[0].public_key().public_numbers() != private_key.public_key().public_numbers():
        raise ValueError("the key does not match the certificate")
    # pyOpenSSL >= 24 takes cryptography objects (its own X509/PKey are deprecated).
    return tssl.CertificateOptions(privateKey=private_key, certificate=certs[0], extraCertChain=list(extra))


@implementer(IOpenSSLClientConnectionCreator)
class _InsecureCreator:
    """A client connection that checks nothing (but still sends SNI)."""

    def __init__(self, hostname: str, acceptable_protocols: Sequence[bytes] | None) -> None:
        options = tssl.CertificateOptions(verify=False, acceptableProtocols=acceptable_protocols)
        self._context = options.getContext()
        self._hostname = hostname

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802, N803
        conn = SSL.Connection(self._context, None)
        conn.set_app_data(tlsProtocol)
        if _is_dns_name(self._hostname):
            conn.set_tlsext_host_name(self._hostname.encode("idna"))
        conn.set_connect_state()
        return conn


def _is_dns_name(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return bool(hostname)
    return False


@implementer(IPolicyForHTTPS)
class ClientContext:
    """Client TLS settings: whom to trust, or nothing at all (``insecure``).

    :param trust_root: a Twisted trust root (``None``: the platform's CAs).
    :param insecure: no certificate or hostname checks at all.
    """

    def __init__(self, trust_root: Any = None, insecure: bool = False) -> None:
        self.trust_root = trust_root
        self.insecure = insecure

    def creator(
        self, hostname: str, acceptable_protocols: Sequence[bytes] | None = None
    ) -> IOpenSSLClientConnectionCreator:
        """A connection creator for ``hostname`` (checked against the certificate unless insecure)."""
        if self.insecure:
            return _InsecureCreator(hostname, acceptable_protocols)
        return tssl.optionsForClientTLS(
            hostname,
            trustRoot=self.trust_root,
            acceptableProtocols=list(acceptable_protocols) if acceptable_protocols else None,
        )

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:  # noqa: N802
        """:class:`IPolicyForHTTPS`: the creator for an HTTPS request to ``hostname``."""
        return self.creator(hostname.decode("ascii"))

    def __repr__(self) -> str:
        return f"<ClientContext insecure={self.insecure} trust_root={self.trust_root!r}>"


def client_context(
    trust_roots: PemSource | Sequence[PemSource] | None = None,
    insecure: bool = False,
) -> ClientContext:
    """A client context.

    :param trust_roots: CA certificates to trust instead of the platform's: a path
        or PEM bytes (may hold several), or a list of them.
    :param insecure: turn off certificate and hostname verification (explicitly).
    :raises ValueError: for unreadable trust roots, or both arguments given.
    """
    if insecure and trust_roots is not None:
        raise ValueError("trust_roots and insecure=True contradict each other")
    if trust_roots is None:
        return ClientContext(None, bool(insecure))
    sources = (
        [trust_roots] if isinstance(trust_roots, (str, bytes, bytearray, os.PathLike)) else list(trust_roots)
    )
    certs: list[Any] = []
    for src in sources:
        certs += _load_certs(_read_pem(src, "trust root"), "trust root")
    roots = tssl.trustRootFromCertificates([tssl.Certificate(X509.from_cryptography(c)) for c in certs])
    return ClientContext(roots, False)


def client_creator(
    host: str,
    ssl_context: Any = None,
    insecure: bool = False,
    acceptable_protocols: Sequence[bytes] | None = None,
) -> IOpenSSLClientConnectionCreator:
    """The connection creator for a client connecting to ``host``.

    :param ssl_context: a :class:`ClientContext`, any ``IPolicyForHTTPS``, an
        ``IOpenSSLClientConnectionCreator``, or ``None`` (platform trust).
    :raises ValueError: for ``ssl_context`` together with ``insecure=True``.
    :raises TypeError: for an ``ssl_context`` of another kind.
    """
    if ssl_context is not None and insecure:
        raise ValueError("ssl_context and insecure=True contradict each other")
    if ssl_context is None:
        return ClientContext(None, insecure).creator(host, acceptable_protocols)
    if isinstance(ssl_context, ClientContext):
        return ssl_context.creator(host, acceptable_protocols)
    if IPolicyForHTTPS.providedBy(ssl_context):
        return ssl_context.creatorForNetloc(host.encode("idna"), 0)
    if IOpenSSLClientConnectionCreator.providedBy(ssl_context):
        return ssl_context
    raise TypeError(f"ssl_context must be a client context (tls.client_context()), not {ssl_context!r}")
