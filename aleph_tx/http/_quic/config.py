"""``QuicConfiguration`` from the TLS objects aleph_tx already takes.

QUIC carries TLS 1.3 itself (RFC 9001), so the certificate and key go to aioquic,
not to OpenSSL. aioquic takes ``cryptography`` objects (and
``QuicConfiguration.load_cert_chain`` takes files); both server inputs of
aleph_tx hold them already:

- :func:`aleph_tx.tls.self_signed_context` and :func:`aleph_tx.tls.server_context`
  return a Twisted ``CertificateOptions`` with ``certificate``, ``privateKey`` and
  ``extraCertChain`` as ``cryptography`` objects;
- an ``ssl:PORT:privateKey=key.pem:certKey=cert.pem`` listen description gives a
  ``CertificateOptions`` holding pyOpenSSL objects, converted here with
  ``to_cryptography()``.

A bare ``OpenSSL.SSL.Context`` does not give its private key back: it is refused
with a message saying what to pass instead. No file is written.

Clients: ``insecure=True`` turns verification off; a :class:`aleph_tx.tls.ClientContext`
made with ``trust_roots`` gives its CA certificates (``cadata``); otherwise
aioquic verifies against the certifi CA bundle.
"""

from __future__ import annotations

import ssl
from typing import Any

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

__all__ = ["client_configuration", "server_configuration", "server_credentials"]

#: Per-stream receive window: with backpressure it bounds a request (or response)
#: body held in memory per stream; 1 MiB, aioquic's default, fills loopback and
#: typical 100 Mbit/s x 50 ms paths.
DEFAULT_STREAM_WINDOW = 1 << 20
#: Connection receive window (grown by aioquic as it is used).
DEFAULT_CONNECTION_WINDOW = 4 << 20
#: QUIC has no connection-less lingering: an endpoint needs an idle timeout. With
#: ``idle_timeout=None`` the server sets a day (imposing none of its own); the
#: peer's own (30–60 s for browsers and aioquic) still applies (RFC 9000 §10.1).
NO_IDLE_TIMEOUT = 86400.0


def _to_crypto(obj: Any, method: str) -> Any:
    convert = getattr(obj, method, None)
    return convert() if convert is not None else obj


def server_credentials(ssl_context: Any) -> tuple[Any, Any, list[Any]]:
    """``(certificate, private_key, chain)`` as ``cryptography`` objects.

    :param ssl_context: a Twisted ``CertificateOptions`` (from
        :func:`aleph_tx.tls.server_context`, :func:`~aleph_tx.tls.self_signed_context`
        or an ``ssl:`` listen description).
    :raises ValueError: for anything that does not give its certificate and key.
    """
    cert = getattr(ssl_context, "certificate", None)
    key = getattr(ssl_context, "privateKey", None)
    if cert is None or key is None:
        raise ValueError(
            "HTTP/3 needs the server's certificate and private key: pass ssl_context="
            "aleph_tx.tls.server_context(cert, key) (or tls.self_signed_context()), or "
            "listen='ssl:PORT:privateKey=key.pem:certKey=cert.pem'; "
            f"{ssl_context!r} does not give them back"
        )
    chain = [_to_crypto(c, "to_cryptography") for c in getattr(ssl_context, "extraCertChain", None) or ()]
    return _to_crypto(cert, "to_cryptography"), _to_crypto(key, "to_cryptography_key"), chain


def server_configuration(
    ssl_context: Any,
    idle_timeout: float | None = None,
    stream_window: int = DEFAULT_STREAM_WINDOW,
    connection_window: int = DEFAULT_CONNECTION_WINDOW,
) -> QuicConfiguration:
    """A server ``QuicConfiguration`` (ALPN ``h3``) with the certificate of ``ssl_context``.

    :param idle_timeout: seconds (``None``: :data:`NO_IDLE_TIMEOUT`).
    :raises ValueError: see :func:`server_credentials`.
    """
    cert, key, chain = server_credentials(ssl_context)
    config = QuicConfiguration(
        alpn_protocols=list(H3_ALPN),
        is_client=False,
        idle_timeout=NO_IDLE_TIMEOUT if idle_timeout is None else float(idle_timeout),
        max_stream_data=stream_window,
        max_data=connection_window,
    )
    config.certificate = cert
    config.private_key = key
    config.certificate_chain = chain
    return config


def _trust_pem(ssl_context: Any) -> bytes | None:
    """PEM CA certificates of a client context made with ``trust_roots``, else ``None``."""
    pem = getattr(ssl_context, "trust_pem", None)
    if pem:
        return bytes(pem)
    # tls.client_context(trust_roots=...) keeps a Twisted trust root; its certificates
    # are pyOpenSSL X509 objects in a private attribute of Twisted's class.
    certs = getattr(getattr(ssl_context, "trust_root", None), "_caCerts", None)
    if not certs:
        return None
    from cryptography.hazmat.primitives.serialization import Encoding

    return b"".join(_to_crypto(c, "to_cryptography").public_bytes(Encoding.PEM) for c in certs)


def client_configuration(
    server_name: str,
    ssl_context: Any = None,
    insecure: bool = False,
    idle_timeout: float = 60.0,
    stream_window: int = DEFAULT_STREAM_WINDOW,
    connection_window: int = DEFAULT_CONNECTION_WINDOW,
) -> QuicConfiguration:
    """A client ``QuicConfiguration`` (ALPN ``h3``, SNI ``server_name``).

    :param ssl_context: ``None`` (certifi's CAs), or a :class:`aleph_tx.tls.ClientContext`.
    :param insecure: no certificate or hostname checks.
    :raises ValueError: for ``ssl_context`` together with ``insecure=True``.
    :raises TypeError: for an ``ssl_context`` whose trust cannot be given to QUIC.
    """
    if ssl_context is not None and insecure:
        raise ValueError("ssl_context and insecure=True contradict each other")
    config = QuicConfiguration(
        alpn_protocols=list(H3_ALPN),
        is_client=True,
        server_name=server_name,
        idle_timeout=idle_timeout,
        max_stream_data=stream_window,
        max_data=connection_window,
    )
    if insecure or getattr(ssl_context, "insecure", False):
        config.verify_mode = ssl.CERT_NONE
    elif ssl_context is not None:
        pem = _trust_pem(ssl_context)
        if not hasattr(ssl_context, "trust_root") or (pem is None and ssl_context.trust_root is not None):
            raise TypeError(
                f"HTTP/3 takes ssl_context=aleph_tx.tls.client_context(...) or insecure=True, "
                f"not {ssl_context!r}"
            )
        if pem is not None:
            config.cadata = pem
    return config
