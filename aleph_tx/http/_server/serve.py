"""``start_server``: the HTTP/1.1 front, the HTTP/2 front on the same TLS port, HTTP/3
beside it, each listening port with the eager write path (:mod:`aleph_tx._eager`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger

from aleph_tx._eager import install_eager
from aleph_tx._server import Server
from aleph_tx._server import listen as _listen
from aleph_tx._time import get_reactor
from aleph_tx.http._ring.limits import check_versions_tls, is_tls_listen, make_options
from aleph_tx.http._server.exchange import Runner
from aleph_tx.http._server.h1 import HTTPFactory

__all__ = ["start_server"]

_log = Logger()


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
        site.aleph_reactor = reactor
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
