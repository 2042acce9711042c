"""TLS contexts for servers and clients (pyOpenSSL through Twisted).

Server contexts are :class:`twisted.internet.ssl.CertificateOptions` (pass them as
``ssl_context`` to ``tcp.start_server`` / ``http.start_server``). Client contexts
are :class:`ClientContext`, which is also a Twisted
:class:`~twisted.web.iweb.IPolicyForHTTPS` (usable as an ``Agent``'s
``contextFactory``). Hostname verification (service-identity) is on by default;
``insecure=True`` turns every check off, explicitly. :func:`client_creator` is the
one place where a client's TLS settings become a connection creator: ``tcp.client``,
``http.websocket_client`` and the HTTP client all use it.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
from collections.abc import Sequence
from typing import Any, Union

from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet import ssl as tssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
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


#: The environment variables through which OpenSSL's default trust store can be
#: pointed elsewhere; part of the cache key of system-trust creators.
_TRUST_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def _is_dns_name(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return bool(hostname)
    return False


@functools.lru_cache(maxsize=1)
def _insecure_context() -> SSL.Context:
    ctx: SSL.Context = tssl.CertificateOptions(verify=False).getContext()
    return ctx


@functools.lru_cache(maxsize=256)
def _verified_creator(
    hostname: str, alpn: tuple[bytes, ...], trust_root: Any, env: tuple[str | None, ...]
) -> IOpenSSLClientConnectionCreator:
    """Twisted's verifying creator, cached: its context (the trust store loaded) is
    built once per host, ALPN list, trust root and trust-store environment."""
    return tssl.optionsForClientTLS(hostname, trustRoot=trust_root, acceptableProtocols=list(alpn) or None)


@implementer(IOpenSSLClientConnectionCreator)
class _ContextCreator:
    """Client connections from one ``SSL.Context``: SNI, ALPN and, with ``check_host``,
    the server certificate checked against ``hostname`` (service-identity).

    The context's own verification mode decides whether the chain is checked; the
    host name check is added per connection, so one context serves many hosts.
    """

    def __init__(self, ctx: SSL.Context, hostname: str, alpn: Sequence[bytes], check_host: bool) -> None:
        self._ctx = ctx
        self._hostname = hostname
        self._alpn = list(alpn)
        self._check_host = check_host

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802, N803
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        if _is_dns_name(self._hostname):
            conn.set_tlsext_host_name(self._hostname.encode("idna"))
        if self._alpn:
            conn.set_alpn_protos(self._alpn)
        if self._check_host:
            chain_checked = bool(self._ctx.get_verify_mode() & SSL.VERIFY_PEER)
            conn.set_verify(SSL.VERIFY_PEER, _host_checker(tlsProtocol, self._hostname, chain_checked))
        conn.set_connect_state()
        return conn


def _host_checker(tls_protocol: Any, hostname: str, chain_checked: bool) -> Any:
    """An OpenSSL verify callback: the chain as the context says, the leaf for ``hostname``."""
    from service_identity import VerificationError
    from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
    from service_identity.pyopenssl import extract_patterns

    host = hostname.strip("[]")
    sid = DNS_ID(host) if _is_dns_name(host) else IPAddress_ID(host)
    proto: list[Any] = [tls_protocol]

    def verify(conn: SSL.Connection, cert: X509, err: int, depth: int, ok: int) -> bool:
        result = bool(ok) or not chain_checked
        if depth != 0 or not proto:
            return result
        try:
            verify_service_identity(extract_patterns(cert), [sid], [])
        except VerificationError:
            proto.pop().failVerification(Failure())
            return False
        return result

    return verify


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
        alpn = tuple(acceptable_protocols or ())
        if self.insecure:
            return _ContextCreator(_insecure_context(), hostname, alpn, check_host=False)
        env = tuple(os.environ.get(name) for name in _TRUST_ENV) if self.trust_root is None else ()
        return _verified_creator(hostname, alpn, self.trust_root, env)

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
    port: int = 0,
) -> IOpenSSLClientConnectionCreator:
    """The TLS connection creator for a client connecting to ``host``: the one used by
    ``tcp.client``, ``http.websocket_client`` and the HTTP client.

    :param ssl_context: whom to trust, one of:

        - ``None``: the platform's trust store (OpenSSL's ``SSL_CERT_FILE`` and
          ``SSL_CERT_DIR`` apply), the host name checked;
        - a :class:`ClientContext` (:func:`client_context`);
        - any ``twisted.web.iweb.IPolicyForHTTPS`` (``creatorForNetloc(host, port)``
          is called, e.g. ``BrowserLikePolicyForHTTPS``);
        - an ``IOpenSSLClientConnectionCreator`` (e.g. ``optionsForClientTLS(...)``),
          used as is for every host;
        - an ``OpenSSL.SSL.Context``, or anything with ``getContext()`` returning one
          (``twisted.internet.ssl.CertificateOptions``): its verification settings
          decide the chain; SNI is sent and the certificate is checked against ``host``.
    :param insecure: check nothing (SNI is still sent); not with ``ssl_context``.
    :param acceptable_protocols: ALPN names to offer (RFC 7301), e.g. ``[b"h2",
        b"http/1.1"]``; offered with ``None``, ``insecure``, a :class:`ClientContext`
        and an ``SSL.Context``; another policy or a ready creator is used as it is.
    :param port: passed to an ``IPolicyForHTTPS``.
    :raises ValueError: for ``ssl_context`` together with ``insecure=True``.
    :raises TypeError: for an ``ssl_context`` of another kind.
    """
    if ssl_context is not None and insecure:
        raise ValueError("give ssl_context or insecure=True, not both")
    if ssl_context is None:
        return ClientContext(None, insecure).creator(host, acceptable_protocols)
    if isinstance(ssl_context, ClientContext):
        return ssl_context.creator(host, acceptable_protocols)
    if IPolicyForHTTPS.providedBy(ssl_context):
        creator: IOpenSSLClientConnectionCreator = ssl_context.creatorForNetloc(host.encode("idna"), port)
        return creator
    if IOpenSSLClientConnectionCreator.providedBy(ssl_context):
        return ssl_context
    ctx = ssl_context
    if not isinstance(ctx, SSL.Context):
        get_context = getattr(ssl_context, "getContext", None)
        ctx = get_context() if callable(get_context) else None
    if isinstance(ctx, SSL.Context):
        return _ContextCreator(ctx, host, tuple(acceptable_protocols or ()), check_host=True)
    raise TypeError(
        "ssl_context must be a tls.client_context(), an IPolicyForHTTPS, an "
        "IOpenSSLClientConnectionCreator, an OpenSSL.SSL.Context or have getContext(), "
        f"not {ssl_context!r}"
    )
