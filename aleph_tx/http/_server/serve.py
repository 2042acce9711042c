"""``start_server`` and the eager write path (docs/internals.rst, "The eager write path").

Twisted's ``tcp.Connection.write`` always buffers and registers the socket for
writability: two ``epoll_ctl`` calls per response. :class:`EagerServer` sends at
once when nothing is queued (what asyncio transports do) and falls back to
Twisted's path on a partial send, when data is queued, under old-style TLS, or
with a non-streaming producer. It is installed per listening port, below any
TLS layer (``TLSMemoryBIOProtocol`` writes ciphertext through it), never from a
protocol through ``transport.socket`` (that would send plaintext under TLS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

from aleph_tx._server import Server
from aleph_tx._server import listen as _listen
from aleph_tx._time import get_reactor
from aleph_tx.http._ring.limits import check_versions_tls, is_tls_listen, make_options
from aleph_tx.http._server.exchange import Runner
from aleph_tx.http._server.h1 import HTTPFactory

__all__ = ["EagerServer", "eager_write_supported", "install_eager", "start_server"]

_log = Logger()

# Private attributes of twisted.internet.abstract.FileDescriptor / tcp.Server the
# eager path reads; checked at start-up (Twisted 26.x).
_REQUIRED = (
    "_tempDataLen",
    "dataBuffer",
    "TLS",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "producer",
    "streamingProducer",
)


class EagerServer(tcp.Server):
    """A ``tcp.Server`` whose ``write`` sends at once when nothing is queued.

    It also reads up to 256 KiB per ``recv`` (Twisted's default is 64 KiB; asyncio
    reads 256 KiB): a 10 MiB upload measured 654 → 850 MB/s. ``bufferSize`` is
    also the send-buffer size past which a streaming producer is paused.
    """

    bufferSize = 262144  # noqa: N815 - Twisted's name

    def write(self, data: bytes) -> None:
        """Send now if the socket takes it all; queue the rest the Twisted way."""
        if (
            data
            and type(data) is bytes
            and not self._tempDataLen
            and not self.dataBuffer
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnecting
            and not self._writeDisconnected
            and (self.producer is None or self.streamingProducer)
        ):
            try:
                n = self.socket.send(data)
            except OSError:  # EAGAIN: queue; EPIPE/ECONNRESET: Twisted's path closes it
                n = 0
            if n == len(data):
                return
            data = data[n:]
        super().write(data)  # type: ignore[no-untyped-call]

    def writeSequence(self, iovec: Sequence[bytes]) -> None:  # type: ignore[override]  # noqa: N802
        """One ``write`` of the joined pieces."""
        self.write(b"".join(iovec))


def eager_write_supported() -> bool:
    """The start-up self-check: does this Twisted have what :class:`EagerServer` reads?"""
    try:
        probe = tcp.Server.__new__(tcp.Server)
        from twisted.internet import abstract

        abstract.FileDescriptor.__init__(probe)
        return all(hasattr(probe, name) for name in _REQUIRED) and hasattr(tcp.Port, "transport")
    except Exception:
        return False


_EAGER_OK: bool | None = None


def install_eager(port: Any, server_class: type[tcp.Server] = EagerServer) -> bool:
    """Make the listening ``port`` build ``server_class`` transports (``tcp.Port`` only).

    :returns: whether it was installed (``False`` for other port kinds, or when the
        self-check fails: then the plain Twisted write path is used).
    """
    global _EAGER_OK
    if _EAGER_OK is None:
        _EAGER_OK = eager_write_supported()
        if not _EAGER_OK:
            _log.warn("eager writes disabled: this Twisted lacks the attributes they need")
    if not _EAGER_OK or type(port) is not tcp.Port or port.transport is not tcp.Server:
        return False
    port.transport = server_class
    return True


def start_server(
    handler: Callable[[dict[str, Any]], Any],
    port: int = 0,
    host: str = "",
    listen: str | Sequence[str] | None = None,
    ssl_context: Any = None,
    reactor: Any = None,
    **options: Any,
) -> Server:
    """Serve ``handler`` over HTTP/1.1; binds at once.

    :param handler: ``fn(req) -> response dict | None | Deferred | coroutine``.
    :param port: TCP port (0: an ephemeral one; see ``Server.port``).
    :param host: interface (``""``: all IPv4 interfaces).
    :param listen: Twisted endpoint description(s) instead of ``port``/``host``.
    :param ssl_context: a server TLS context (:func:`aleph_tx.tls.self_signed_context`).
    :param reactor: the reactor (``None``: the global one).
    :param options: see :doc:`http_server` (``max_request_body_size``, ``idle_timeout``, ...).
    :returns: the :class:`~aleph_tx._server.Server`.
    :raises TypeError: for an unknown option name, or a handler that is not callable.
    :raises ValueError: for a bad option value.
    :raises twisted.internet.error.CannotListenError: if the port cannot be bound.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {handler!r}")
    opts = make_options(options)
    reactor = get_reactor(reactor)
    runner = Runner(handler, opts, reactor)
    factory = HTTPFactory(runner)
    top: Any = factory
    check_versions_tls(opts.http_versions, is_tls_listen(listen, ssl_context))
    if "h3" in opts.http_versions:
        _h3_module()  # refuse before binding anything
    if "h2" in opts.http_versions:
        if opts.continue_handler is not None:
            raise ValueError(
                "continue_handler is honoured on HTTP/1.1 only: twisted.web's HTTP/2 answers "
                "'Expect: 100-continue' itself; leave 'h2' out of http_versions to use it"
            )
        from aleph_tx.http._server.alpn import ALPNFactory
        from aleph_tx.http._server.web import make_site, resource_for

        site = make_site(resource_for(runner), opts.max_request_body_size, opts.idle_timeout)
        site.aleph_reactor = reactor  # type: ignore[attr-defined]
        top = ALPNFactory(factory, site, reactor)
    tls: list[Any] = []
    ports = _listen(
        top, port=port, host=host, listen=listen, ssl_context=ssl_context, reactor=reactor, tls=tls
    )
    quic: list[Any] = []
    if "h3" in opts.http_versions:
        quic = _listen_h3(runner, ports, tls, reactor)
    for p in ports:
        install_eager(p)
    server = Server([*ports, *quic], shutdown_timeout=opts.shutdown_timeout, clock=runner.clock)
    factory.server = server
    for q in quic:
        q.tracker = server
    return server


def _h3_module() -> Any:
    """``_server.h3``, or :class:`ValueError` with the install line when aioquic is missing."""
    try:
        from aleph_tx.http._server import h3
    except ImportError as e:
        raise ValueError(f"http_versions with 'h3' needs aioquic: pip install 'aleph_tx[http3]' ({e})") from e
    return h3


def _listen_h3(runner: Runner, ports: list[Any], tls: list[Any], reactor: Any) -> list[Any]:
    """HTTP/3 on the UDP port of each TLS listener, with its certificate; advertised
    by ``alt-svc`` on every response (RFC 7838)."""
    h3 = _h3_module()
    quic: list[Any] = []
    try:
        for tcp_port, options in zip(ports, tls, strict=True):
            if options is not None:
                address = tcp_port.getHost()
                quic.append(h3.listen_beside(runner, options, address.port, address.host, reactor))
    except BaseException:
        for p in [*ports, *quic]:
            p.stopListening()
        raise
    runner.alt_svc = b"alt-svc: " + h3.alt_svc(quic[0].getHost().port).encode("ascii") + b"\r\n"
    return quic
