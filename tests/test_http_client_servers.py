"""Servers (not written by the project) and helpers for the HTTP client tests.

- :class:`EchoSite`: a twisted.web ``Site`` with routes for every client option;
- :func:`thread_server`: Python's ``http.server`` in a thread;
- :class:`RawServer`: a TCP server answering canned bytes (malformed responses, stalls);
- :func:`make_tls`: a CA and a ``localhost`` certificate made with ``cryptography``;
- :class:`ThreadProxy`: a tiny forward proxy (absolute-URI requests and CONNECT);
- :class:`AiohttpServer`: an aiohttp application in a thread (multipart, forms, uploads).

No tests here: the other ``test_http_client*`` modules import it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import json
import select
import socket
import socketserver
import threading
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.web import resource, server
from zope.interface import implementer


def itest(timeout: float = 15) -> Callable[[Any], Any]:
    """An async test on the real reactor, failed (not hung) after ``timeout`` seconds."""

    def deco(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Any:
        @functools.wraps(fn)
        async def wrapper(*a: Any, **kw: Any) -> Any:
            d = Deferred.fromCoroutine(fn(*a, **kw))
            d.addTimeout(timeout, reactor)
            return await d

        return pytest_twisted.ensureDeferred(wrapper)

    return deco


def sleep(seconds: float) -> Deferred[None]:
    """A real-time pause for integration tests (servers that stall)."""
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


# -- a twisted.web site ------------------------------------------------------------


@implementer(IPullProducer)
class _BigProducer:
    """Writes ``n`` bytes in 64 KiB chunks, only when the transport asks for more."""

    def __init__(self, request: server.Request, n: int, stats: dict[str, int]) -> None:
        self.request = request
        self.left = n
        self.stats = stats

    def resumeProducing(self) -> None:  # noqa: N802
        if self.left <= 0:
            self.request.unregisterProducer()
            self.request.finish()
            return
        size = min(65536, self.left)
        self.left -= size
        self.stats["written"] += size
        self.request.write(b"x" * size)

    def stopProducing(self) -> None:  # noqa: N802
        self.left = 0


class EchoSite(resource.Resource):
    """Routes: /echo /status/N /redirect/N /loop /goto /cookie/set /cookie/get /text
    /json /big /stall /stall-body /drip /close /chunked-stream."""

    isLeaf = True  # noqa: N815

    def __init__(self) -> None:
        super().__init__()
        self.stats = {"written": 0, "requests": 0}
        self.seen: list[dict[str, Any]] = []
        self.pending: list[server.Request] = []

    def render(self, request: server.Request) -> Any:
        self.stats["requests"] += 1
        path = request.path.decode()
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        body = request.content.read()
        info = {
            "method": request.method.decode(),
            "path": path,
            "uri": request.uri.decode(),
            "headers": {
                k.decode().lower(): ", ".join(x.decode() for x in v)
                for k, v in request.requestHeaders.getAllRawHeaders()
            },
            "body": body.decode("latin-1"),
            "protocol": request.clientproto.decode(),
        }
        self.seen.append(info)
        if path == "/echo":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(info).encode()
        if path.startswith("/status/"):
            request.setResponseCode(int(path.split("/")[2]))
            return f"status {path.split('/')[2]}".encode()
        if path.startswith("/redirect/"):
            n = int(path.split("/")[2])
            code = int(args.get("code", "302"))
            request.setResponseCode(code)
            target = f"/redirect/{n - 1}?code={code}" if n > 1 else "/echo"
            request.setHeader(b"location", target.encode())
            return b"redirecting"
        if path == "/goto":
            request.setResponseCode(int(args.get("code", "302")))
            request.setHeader(b"location", args["to"].encode())
            return b""
        if path == "/loop":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/loop")
            return b""
        if path == "/cookie/set":
            for k, v in args.items():
                request.addCookie(k.encode(), v.encode(), path=b"/")
            return b"set"
        if path == "/cookie/get":
            return request.getHeader(b"cookie") or b""
        if path == "/text":
            charset = args.get("charset")
            text = args.get("t", "héllo wörld")
            ctype = "text/plain" + (f"; charset={charset}" if charset else "")
            request.setHeader(b"content-type", ctype.encode())
            try:
                data = text.encode(charset or "utf-8")
            except LookupError:
                data = text.encode("utf-8")
            return data + (b"\xff" if "bad" in args else b"")
        if path == "/json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"a": [1, 2, {"b": None}]}).encode()
        if path == "/big":
            n = int(args["n"])
            request.setHeader(b"content-length", str(n).encode())
            request.registerProducer(_BigProducer(request, n, self.stats), False)
            return server.NOT_DONE_YET
        if path == "/stall":
            self.pending.append(request)
            return server.NOT_DONE_YET
        if path == "/stall-body":
            request.setHeader(b"content-length", b"100")
            request.write(b"partial")
            self.pending.append(request)
            return server.NOT_DONE_YET
        if path == "/drip":
            # n chunks, one every `every` seconds
            n, every = int(args.get("n", "3")), float(args.get("every", "0.05"))
            self._drip(request, n, every)
            return server.NOT_DONE_YET
        if path == "/close":
            request.setHeader(b"connection", b"close")
            return b"closing"
        if path == "/headers":
            for i in range(int(args.get("n", "1"))):
                request.setHeader(f"x-h{i}".encode(), b"v" * int(args.get("size", "10")))
            request.responseHeaders.addRawHeader(b"x-rep", b"a")
            request.responseHeaders.addRawHeader(b"x-rep", b"b")
            return b"ok"
        request.setResponseCode(404)
        return b"not found"

    def _drip(self, request: server.Request, n: int, every: float) -> None:
        if request.finished or request._disconnected:
            return
        if n == 0:
            request.finish()
            return
        request.write(b"chunk")
        reactor.callLater(every, self._drip, request, n - 1, every)

    def release(self) -> None:
        """Finish every stalled request (test teardown)."""
        for r in self.pending:
            if not r.finished and not r._disconnected:
                r.finish()
        self.pending.clear()


class WebServer:
    """An :class:`EchoSite` listening on 127.0.0.1 (plain or TLS)."""

    def __init__(self, ssl_options: Any = None, alpn: bool = True) -> None:
        from twisted.protocols.policies import WrappingFactory

        self.site_resource = EchoSite()
        site: Any = server.Site(self.site_resource)
        site.displayTracebacks = False
        site.log = lambda request: None
        if not alpn:
            # a Site offers h2 with ALPN; wrapped, the TLS layer sees no protocols to offer
            site = WrappingFactory(site)
        if ssl_options is not None:
            self.port = reactor.listenSSL(0, site, ssl_options, interface="127.0.0.1")
            scheme = "https"
        else:
            self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
            scheme = "http"
        self.number = self.port.getHost().port
        self.url = f"{scheme}://127.0.0.1:{self.number}"

    def close(self) -> Deferred[None]:
        """Stop listening (``await`` it in a test; a fixture calls ``blockon``)."""
        self.site_resource.release()
        return self.port.stopListening()


# -- Python's http.server in a thread --------------------------------------------------


class _PyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(length) if length else b""
        if self.path.startswith("/redirect"):
            self.send_response(303)
            self.send_header("Location", "/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": base64.b64encode(body).decode(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _reply  # noqa: N815


class ThreadServer:
    """Python's ``ThreadingHTTPServer`` on 127.0.0.1 port 0 in a daemon thread."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _PyHandler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- a raw TCP server with canned answers --------------------------------------------


class _Canned(Protocol):
    def __init__(self, owner: RawServer) -> None:
        self.owner = owner
        self.buf = b""
        self.answered = 0

    def connectionMade(self) -> None:  # noqa: N802
        self.owner.connections.append(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.owner.requests.append(head)
            answer = self.owner.answer(self.answered)
            self.answered += 1
            if answer is None:
                continue  # stall
            data_out, close = answer
            if data_out:
                self.transport.write(data_out)
            if close:
                self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.owner.lost += 1


class RawServer:
    """Answers each request head with ``answer(n) -> (bytes, close_after) | None (stall)``."""

    def __init__(self, answer: Callable[[int], tuple[bytes, bool] | None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections: list[_Canned] = []
        self.lost = 0
        factory = Factory.forProtocol(lambda: _Canned(self))
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def close(self) -> Deferred[None]:
        """Abort the connections and stop listening (a Deferred)."""
        for c in self.connections:
            if c.transport is not None:
                c.transport.abortConnection()
        return self.port.stopListening()


class StallAccept:
    """A listening socket that never accepts (its backlog full): connects hang."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fillers.append(s)

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


# -- TLS material ------------------------------------------------------------------------


def make_tls() -> dict[str, bytes]:
    """A CA certificate and a ``localhost``/127.0.0.1 server certificate signed by it (PEM)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aleph_tx test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca": ca.public_bytes(pem),
        "cert": cert.public_bytes(pem),
        "key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }


def server_tls_options(material: dict[str, bytes], h2: bool = False) -> Any:
    """Server TLS options for ``material``; ``h2``: offer ``h2`` then ``http/1.1`` with ALPN."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from twisted.internet import ssl

    return ssl.CertificateOptions(
        privateKey=load_pem_private_key(material["key"], None),
        certificate=x509.load_pem_x509_certificate(material["cert"]),
        # Always name http/1.1: with no protocol at all, Twisted's ALPN callback
        # fails the handshake of every client that offers ALPN (curl, browsers).
        acceptableProtocols=[b"h2", b"http/1.1"] if h2 else [b"http/1.1"],
    )


# -- a forward proxy in a thread ----------------------------------------------------------


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        owner: ThreadProxy = self.server.owner  # type: ignore[attr-defined]
        sock = self.request
        sock.settimeout(10)
        if owner.tls is not None:  # an HTTPS proxy: TLS from the client to the proxy
            try:
                sock = owner.tls.wrap_socket(sock, server_side=True)
            except OSError:
                return  # the client refused our certificate
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        owner.seen.append({"method": method, "target": target, "headers": headers})
        if owner.require_auth and headers.get("proxy-authorization") != owner.require_auth:
            sock.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            self._pipe(sock, upstream)
            return
        # absolute-URI request: forward it as origin-form with Connection: close
        from urllib.parse import urlsplit

        u = urlsplit(target)
        upstream = socket.create_connection((u.hostname, u.port or 80), timeout=10)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        out_lines = [f"{method} {path} HTTP/1.1"]
        for line in lines[1:]:
            name = line.partition(":")[0].strip().lower()
            if name in ("connection", "proxy-authorization", "proxy-connection"):
                continue
            out_lines.append(line)
        out_lines.append("Connection: close")
        upstream.sendall("\r\n".join(out_lines).encode("latin-1") + b"\r\n\r\n" + rest)
        self._pipe(sock, upstream, one_way_close=True)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket, one_way_close: bool = False) -> None:
        socks = [a, b]
        try:
            while True:
                readable, _, _ = select.select(socks, [], [], 10)
                if not readable:
                    return
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            b.close()


class ThreadProxy:
    """A forward proxy on 127.0.0.1: absolute-URI requests and CONNECT tunnels."""

    def __init__(self, require_auth: str | None = None, tls: dict[str, bytes] | None = None) -> None:
        """``tls``: material of :func:`make_tls`: an HTTPS proxy (TLS to the proxy itself)."""
        self.seen: list[dict[str, Any]] = []
        self.require_auth = require_auth
        self.tls: Any = None
        if tls is not None:
            import ssl
            import tempfile

            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
                cert.write_bytes(tls["cert"])
                key.write_bytes(tls["key"])
                self.tls.load_cert_chain(cert, key)
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ProxyHandler)
        self.server.daemon_threads = True
        self.server.owner = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- an aiohttp server in a thread -------------------------------------------------------------


class AiohttpServer:
    """An aiohttp application on 127.0.0.1 port 0, its loop in a daemon thread."""

    def __init__(self) -> None:
        from aiohttp import web

        async def multipart(request: web.Request) -> web.Response:
            form = await request.post()
            out: dict[str, Any] = {}
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    out[name] = {
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "data": value.file.read().decode("latin-1"),
                    }
                else:
                    out[name] = value
            return web.json_response(out)

        async def form(request: web.Request) -> web.Response:
            data = await request.post()
            return web.json_response({k: data.getall(k) for k in data})

        async def chunked(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.content_type = "text/plain"
            resp.charset = "iso-8859-1"
            await resp.prepare(request)
            for i in range(5):
                await resp.write(f"part {i} é\n".encode("iso-8859-1"))
                await asyncio.sleep(0.005)
            await resp.write_eof()
            return resp

        async def upload(request: web.Request) -> web.Response:
            n = 0
            async for chunk in request.content.iter_any():
                n += len(chunk)
            return web.json_response({"received": n, "chunked": request.headers.get("transfer-encoding")})

        async def cookies(request: web.Request) -> web.Response:
            resp = web.json_response(dict(request.cookies))
            resp.set_cookie("visits", str(int(request.cookies.get("visits", "0")) + 1))
            return resp

        app = web.Application()
        app.router.add_post("/multipart", multipart)
        app.router.add_post("/form", form)
        app.router.add_get("/chunked", chunked)
        app.router.add_post("/upload", upload)
        app.router.add_get("/cookies", cookies)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()
        self.port = 0

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# -- hypercorn (HTTP/1.1 on h11, HTTP/2 on h2) in a thread --------------------------------------


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Routes: /echo (JSON of the request, body length), /stream (chunked), /big?n=."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    path = scope["path"]
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for i in range(int(query.get("n", "5"))):
            await send({"type": "http.response.body", "body": b"part %d\n" % i, "more_body": True})
            await asyncio.sleep(0.002)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/big":
        n = int(query["n"])
        headers = [(b"content-length", str(n).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while n > 0:
            chunk = min(n, 65536)
            n -= chunk
            await send({"type": "http.response.body", "body": b"x" * chunk, "more_body": n > 0})
        return
    info = {
        "method": scope["method"],
        "path": path,
        "query": scope["query_string"].decode(),
        "http_version": scope["http_version"],
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "body_length": size,
    }
    out = json.dumps(info).encode()
    status = int(query.get("status", "200"))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


class HypercornServer:
    """hypercorn serving :func:`_asgi_app` on 127.0.0.1 port 0 (TLS with ALPN h2 when ``tls``)."""

    def __init__(self, tls: dict[str, bytes] | None = None, tmp: Path | None = None) -> None:
        from hypercorn.app_wrappers import ASGIWrapper
        from hypercorn.asyncio.run import worker_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        scheme = "http"
        if tls is not None:
            assert tmp is not None
            (tmp / "cert.pem").write_bytes(tls["cert"])
            (tmp / "key.pem").write_bytes(tls["key"])
            config.certfile = str(tmp / "cert.pem")
            config.keyfile = str(tmp / "key.pem")
            scheme = "https"
        sockets = config.create_sockets()
        sock = (sockets.secure_sockets or sockets.insecure_sockets)[0]
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(
                worker_serve(
                    ASGIWrapper(_asgi_app), config, sockets=sockets, shutdown_trigger=self.stopping.wait
                )
            )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        for _ in range(200):  # until it accepts
            try:
                socket.create_connection(sock.getsockname()[:2], timeout=1).close()
                break
            except OSError:
                threading.Event().wait(0.01)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)
