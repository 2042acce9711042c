"""In-memory plumbing for the fault tests (``tests/test_faults_*.py``): no sockets.

Servers are built through the public API only: ``http.start_server`` and
``tcp.start_server`` with ``reactor=`` a :class:`ThreadedClock` record their
factory in ``reactor.tcpServers`` / ``reactor.sslServers`` (Twisted's
``MemoryReactor``); ``http.websocket_client`` and ``tcp.client`` record theirs in
``reactor.tcpClients``. A :class:`Pipe` joins a server protocol and a client
protocol with two in-memory transports and moves bytes when asked, so every fault
(a peer that aborts, a peer that stops reading) happens at an exact point.

- :class:`ThreadedClock`: a ``MemoryReactorClock`` with a real thread pool; calls a
  worker thread makes with ``callFromThread`` wait in a queue until the test runs
  them (:meth:`Pipe.settle`), so thread handlers (``executor="thread"``, WSGI) are
  deterministic too.
- :class:`Pipe`: ``step()`` moves bytes once; ``settle()`` until nothing moves
  (also giving the global reactor a turn: twisted.web's HTTP/2 and autobahn
  schedule there); ``abort_client()`` / ``abort_server()`` cut the connection
  (buffered bytes are lost, the other side sees ``ConnectionLost``);
  a transport pauses its streaming producer past 64 KiB of unsent output, as
  Twisted's do, and the Pipe resumes it once delivered; ``client_reading = False``
  makes the client read nothing, so the server's output backs up.
- :class:`RawClient`, :class:`H2Client`: the peer's side, bytes in and out.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

SERVER_ADDR = IPv4Address("TCP", "127.0.0.1", 8080)
CLIENT_ADDR = IPv4Address("TCP", "127.0.0.1", 40000)

#: Unread output past which the writer's producer is paused (a full socket buffer).
HIGH_WATER = 65536


class ThreadedClock(MemoryReactorClock):
    """A memory reactor and clock with a real thread pool (``IReactorThreads``).

    ``callFromThread`` only queues the call: :meth:`run_thread_calls` (called by
    :meth:`Pipe.settle`) runs what is queued, on the test's thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = (
            queue.SimpleQueue()
        )
        self._pool: ThreadPool | None = None

    def getThreadPool(self) -> ThreadPool:  # noqa: N802 - Twisted's name
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=4, name="faults")
            # daemon threads: one stuck for good (a hang under test) cannot hold the process
            self._pool.threadFactory = _daemon_thread  # type: ignore[method-assign]
            self._pool.start()
        return self._pool

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self.getThreadPool().callInThread(f, *args, **kwargs)

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:  # noqa: N802
        self._calls.put((f, args, kwargs))

    def run_thread_calls(self, wait: float = 0.0) -> int:
        """Run the calls worker threads queued (waiting up to ``wait`` s for the first)."""
        n = 0
        while True:
            try:
                f, args, kwargs = (
                    self._calls.get(timeout=wait) if wait and not n else self._calls.get_nowait()
                )
            except queue.Empty:
                return n
            f(*args, **kwargs)
            n += 1

    @property
    def busy_threads(self) -> int:
        """Worker threads still running a task."""
        return 0 if self._pool is None else len(self._pool.working)

    def stop_threads(self, seconds: float = 5.0) -> None:
        """Stop the pool, running what its threads ask of the reactor meanwhile.

        :raises AssertionError: if a thread is still busy after ``seconds`` (it is left
            behind, a daemon: the hang is the test's failure, not the process's).
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        deadline = global_reactor.seconds() + seconds
        while pool.working and global_reactor.seconds() < deadline:
            self.run_thread_calls(wait=0.01)
        if pool.working:
            raise AssertionError(
                f"{len(pool.working)} worker thread(s) still busy {seconds:g} s after the test"
            )
        pool.stop()


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class End(StringTransport):
    """One side's transport: what its protocol writes waits here until the Pipe moves it."""

    def __init__(self, host: IPv4Address, peer: IPv4Address) -> None:
        super().__init__(host, peer, lenient=True)
        self.aborted = False
        self.lost = False
        self.paused_by_pipe = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        if self.lost or self.disconnecting:
            return  # as Twisted: writes after loseConnection go nowhere
        super().write(data)
        # as Twisted's FileDescriptor: past the buffer size, pause the streaming producer
        # (the Pipe resumes it once the bytes were delivered)
        if (
            self.producer is not None
            and self.streaming
            and not self.paused_by_pipe
            and self.io.tell() > HIGH_WATER
        ):
            self.paused_by_pipe = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Iterable[bytes]) -> None:  # noqa: N802
        self.write(b"".join(data))

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True
        self.loseConnection()

    def unregisterProducer(self) -> None:  # noqa: N802 - lenient, as Twisted's transports
        self.producer = None
        self.streaming = None

    # ITCPTransport, as far as the protocols under test use it
    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802
        pass

    def setTcpKeepAlive(self, enabled: bool) -> None:  # noqa: N802
        pass

    def loseWriteConnection(self) -> None:  # noqa: N802
        self.loseConnection()


class RawClient(Protocol):
    """The peer as bytes: ``send(data)``; ``received`` holds what the server wrote."""

    def __init__(self) -> None:
        self.received = b""
        self.lost_reason: Failure | None = None

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802, B008
        self.lost_reason = reason


class Pipe:
    """A server protocol and a client protocol joined in memory (see the module docstring).

    :param server: the server's protocol factory (``buildProtocol`` is called here).
    :param client: the client's protocol, or its factory.
    :param clock: the server's :class:`ThreadedClock` (``advance(0)`` on each step).
    """

    def __init__(self, server: Any, client: Any, clock: ThreadedClock | None = None) -> None:
        self.clock = clock or ThreadedClock()
        self.server = server.buildProtocol(CLIENT_ADDR)
        self.client = client.buildProtocol(SERVER_ADDR) if hasattr(client, "buildProtocol") else client
        self.st = End(SERVER_ADDR, CLIENT_ADDR)
        self.ct = End(CLIENT_ADDR, SERVER_ADDR)
        self.client_reading = True
        self.server_reading = True
        #: exceptions a protocol raised from ``dataReceived`` (the connection was cut)
        self.errors: list[BaseException] = []
        # as Twisted's transports: data goes to ``transport.protocol`` (an upgrade
        # hand-off replaces it)
        self.st.protocol = self.server
        self.ct.protocol = self.client
        self.server.makeConnection(self.st)
        self.client.makeConnection(self.ct)

    @property
    def closed(self) -> bool:
        """The connection is gone (both protocols got ``connectionLost``)."""
        return self.st.lost

    def step(self) -> bool:
        """Move what each side wrote to the other, then deliver a close; whether anything happened."""
        moved = self._move(self.ct, self.st, self.server_reading)
        moved = self._move(self.st, self.ct, self.client_reading) or moved
        for t, other in ((self.st, self.ct), (self.ct, self.st)):
            if t.disconnecting and not t.lost and (t.aborted or not t.value() or other.lost):
                self._lose(aborted_by=t)
                return True
        return moved

    def _move(self, src: End, dst: End, reading: bool) -> bool:
        if src.lost:
            return False
        if not reading:
            return False
        data = src.value()
        if data:
            src.clear()
            try:
                dst.protocol.dataReceived(data)
            except Exception as e:  # as Twisted's reactor: the connection is dropped
                self.errors.append(e)
                dst.abortConnection()
        if src.paused_by_pipe and not src.lost:
            src.paused_by_pipe = False
            if src.producer is not None:
                src.producer.resumeProducing()
            return True
        return bool(data)

    def _lose(self, aborted_by: End) -> None:
        aborted = aborted_by.aborted
        for t in (self.st, self.ct):
            t.lost = True
            t.connected = False
            t.clear()
        for t in (self.st, self.ct):
            if t is aborted_by:
                reason: Exception = ConnectionAborted() if aborted else ConnectionDone()
            else:
                reason = ConnectionLost() if aborted else ConnectionDone()
            producer, t.producer = t.producer, None
            try:
                if producer is not None:
                    producer.stopProducing()
                t.protocol.connectionLost(Failure(reason))
            except Exception as e:  # as Twisted's reactor: logged, the connection is gone
                self.errors.append(e)

    def abort_client(self) -> None:
        """The client cuts the connection (what it sent before was delivered)."""
        self.ct.abortConnection()

    def abort_server(self) -> None:
        """The server's side is cut (the network dropped it)."""
        self.st.abortConnection()

    async def settle(self, rounds: int = 2000) -> None:
        """Step, run thread calls and ``advance(0)`` until nothing moves (reactor turns included)."""
        quiet = 0
        for _ in range(rounds):
            busy = self.step()
            busy = self.clock.run_thread_calls() > 0 or busy
            self.clock.advance(0)
            if busy:
                quiet = 0
                continue
            quiet += 1
            if quiet > 2:
                return
            await turn()
        raise AssertionError("the connection never settled (a busy loop?)")


async def turn(seconds: float = 0.0) -> None:
    """One turn of the global reactor (twisted.web's HTTP/2 and autobahn schedule there)."""
    await deferLater(global_reactor, seconds, lambda: None)


async def until(
    predicate: Callable[[], bool], what: str, pipes: Iterable[Pipe] = (), seconds: float = 5.0
) -> None:
    """Settle ``pipes`` until ``predicate()`` holds, for at most ``seconds`` of real time.

    Only threads (a handler in the thread pool) need real time; the rest is in memory.
    """
    pipes = list(pipes)
    deadline = global_reactor.seconds() + seconds
    while not predicate():
        if global_reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        for p in pipes:
            await p.settle()
            p.clock.run_thread_calls(wait=0.005)
        if not pipes:
            await turn(0.005)


async def close_within(
    server: Any, clock: MemoryReactorClock, pipes: Iterable[Pipe], bound: float | None = None
) -> None:
    """``server.close()`` fires within ``bound`` seconds of ``clock`` (0.1 s steps;
    default: its ``shutdown_timeout`` + 1 s)."""
    if bound is None:
        bound = server.shutdown_timeout + 1.0
    d = server.close()
    pipes = list(pipes)
    waited = 0.0
    while True:
        for p in pipes:
            await p.settle()
        if d.called or waited >= bound - 1e-9:
            break
        clock.advance(0.1)
        waited += 0.1
    assert d.called, f"close() has not fired {bound:g} s after it was called ({server!r})"


async def take_all(conn: Any, n: int, pipe: Pipe) -> list[Any]:
    """Take up to ``n`` messages from ``conn``, settling ``pipe`` when none is ready;
    stops early when nothing more comes. What arrived, in order."""
    got: list[Any] = []
    while len(got) < n:
        d = conn.take()
        if not d.called:
            await pipe.settle()
            if not d.called:
                break
        got.append(d.result)
    return got


def fill(sink: Any, chunk: Any, puts: list[Any]) -> None:
    """A producer that obeys backpressure and never ends: put ``chunk`` into ``sink``
    until a put waits, again each time one fires ``True``; stop at ``False``. Every
    put's Deferred goes to ``puts``."""

    def produce() -> None:
        while True:
            d = sink.put(chunk)
            puts.append(d)
            if not d.called:
                d.addCallback(more)
                return
            if not d.result:
                return

    def more(ok: bool) -> bool:
        if ok:
            produce()
        return ok  # the put's own result, for the test to see

    produce()


def server_factory(clock: MemoryReactorClock, tls: bool = False) -> Any:
    """The protocol factory the last ``start_server(reactor=clock)`` listened with.

    With ``tls``, the TLS layer ``listenSSL`` would have put around it (in memory).
    """
    if not tls:
        return clock.tcpServers[-1][1]
    from twisted.protocols.tls import TLSMemoryBIOFactory

    _, factory, context, _, _ = clock.sslServers[-1]
    return TLSMemoryBIOFactory(context, False, factory)


def client_factory(clock: MemoryReactorClock) -> Any:
    """The factory of the last client connection started with ``reactor=clock``."""
    clock.advance(0)
    return clock.tcpClients[-1][2]


def tls_client(proto: Protocol, trust_pem: bytes, alpn: list[bytes]) -> Protocol:
    """``proto`` behind an in-memory TLS client layer trusting ``trust_pem``, offering ``alpn``."""
    from twisted.internet.ssl import Certificate, optionsForClientTLS
    from twisted.protocols.tls import TLSMemoryBIOFactory

    options = optionsForClientTLS("localhost", Certificate.loadPEM(trust_pem), acceptableProtocols=alpn)
    factory = TLSMemoryBIOFactory(options, True, Factory.forProtocol(lambda: proto))
    built: Protocol = factory.buildProtocol(SERVER_ADDR)
    return built


class H2Client(Protocol):
    """An HTTP/2 client (the h2 library) for the server's in-memory peer.

    ``responses[stream_id]`` is a dict: ``status``, ``headers``, ``body``, ``ended``,
    ``reset`` (an error code or ``None``); ``terminated`` is set by GOAWAY.
    """

    def __init__(self) -> None:
        self.responses: dict[int, dict[str, Any]] = {}
        self.terminated: Any = None
        self.lost_reason: Failure | None = None
        self.errors: list[BaseException] = []

    def connectionMade(self) -> None:  # noqa: N802
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        end: bool = True,
        headers: Iterable[tuple[str, str]] = (),
    ) -> int:
        """Send a request (its body whole, or begun when ``end`` is ``False``); its stream id."""
        sid: int = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":path", path), (":scheme", "https"), (":authority", "localhost")]
        head += list(headers)
        self.responses[sid] = {
            "status": None,
            "headers": {},
            "body": b"",
            "ended": False,
            "reset": None,
            "heads": 0,
        }
        self.conn.send_headers(sid, head, end_stream=body is None and end)
        if body is not None:
            self.send_data(sid, body, end)
        self._flush()
        return sid

    def partial_request(self, method: str, path: str) -> None:
        """Write half of a request's HEADERS frame (a head that never completes)."""
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":path", path), (":scheme", "https"), (":authority", "localhost")]
        self.conn.send_headers(sid, head, end_stream=True)
        data = self.conn.data_to_send()
        assert self.transport is not None
        self.transport.write(data[: len(data) // 2])

    def send_data(self, sid: int, data: bytes, end: bool = False) -> None:
        """Send ``data`` on stream ``sid`` in frames of the peer's maximum size."""
        size = self.conn.max_outbound_frame_size
        for i in range(0, max(len(data), 1), size):
            last = i + size >= len(data)
            self.conn.send_data(sid, data[i : i + size], end_stream=end and last)
        self._flush()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        from h2 import events

        try:
            evs = self.conn.receive_data(data)
        except Exception as e:  # a protocol error by the server
            self.errors.append(e)
            return
        for ev in evs:
            r = self.responses.get(getattr(ev, "stream_id", 0) or 0)
            if isinstance(ev, events.ResponseReceived) and r is not None:
                r["heads"] += 1
                hdrs = dict(ev.headers)
                r["status"] = int(hdrs.pop(":status"))
                r["headers"] = hdrs
            elif isinstance(ev, events.DataReceived) and r is not None:
                r["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, events.StreamEnded) and r is not None:
                r["ended"] = True
            elif isinstance(ev, events.StreamReset) and r is not None:
                r["reset"] = ev.error_code
            elif isinstance(ev, events.ConnectionTerminated):
                self.terminated = ev
        self._flush()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802, B008
        self.lost_reason = reason


def count_responses(data: bytes) -> int:
    """How many HTTP/1.x status lines ``data`` holds (an answer sent twice counts twice)."""
    return data.count(b"HTTP/1.1 ") + data.count(b"HTTP/1.0 ")


def head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-case headers and the rest of the first HTTP/1.x response in ``data``."""
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


class Tracker:
    """Follows what handlers started, so a test can check that all of it ended.

    ``calls`` counts handler runs per path (a request run twice shows), ``deferreds``
    and ``puts`` must all have fired, ``streams`` all be closed, ``running`` threads
    all have returned; ``errors`` are rules a handler saw broken. Thread handlers
    block until :attr:`release` is set.
    """

    def __init__(self) -> None:
        import collections

        self.calls: collections.Counter[str] = collections.Counter()
        self.deferreds: list[Deferred[Any]] = []
        self.puts: list[Deferred[Any]] = []
        self.streams: list[Any] = []
        self.errors: list[str] = []
        self.running = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def enter_thread(self) -> bool:
        """A thread handler starts: ``False`` (and an error) if it runs on the reactor thread."""
        if threading.current_thread() is threading.main_thread():
            self.errors.append("a thread handler ran on the reactor thread")
            return False
        with self._lock:
            self.running += 1
        self.entered.set()
        return True

    def leave_thread(self) -> None:
        with self._lock:
            self.running -= 1

    def block(self) -> None:
        """Called in a worker thread: wait for :attr:`release` (bounded)."""
        if not self.release.wait(10):
            self.errors.append("a blocked thread handler was never released")

    def pending(self) -> list[str]:
        """What has not ended: Deferreds not fired, streams not closed, threads running."""
        out = [f"Deferred {d!r}" for d in self.deferreds if not d.called]
        out += [f"put {d!r}" for d in self.puts if not d.called]
        out += [f"stream {st!r}" for st in self.streams if not st.closed]
        if self.running:
            out.append(f"{self.running} thread handler(s) still running")
        return out


class LoggedFailures:
    """Failures logged with ``twisted.logger`` while active (a context manager)."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def _observe(self, event: dict[str, Any]) -> None:
        f = event.get("log_failure")
        if f is not None:
            self.failures.append(f)

    def __enter__(self) -> LoggedFailures:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self._observe)
        return self

    def __exit__(self, *exc: object) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self._observe)

    def of(self, *types: type[BaseException]) -> list[Failure]:
        """The logged failures of these types (all with none given)."""
        return [f for f in self.failures if not types or f.check(*types)]


WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def ws_frame(payload: bytes, opcode: int = 2, fin: bool = True, mask: bool = True) -> bytes:
    """One WebSocket frame (RFC 6455 §5.2), masked as a client sends it."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        out = bytes([first, bit | n])
    elif n < 65536:
        out = bytes([first, bit | 126]) + n.to_bytes(2, "big")
    else:
        out = bytes([first, bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return out + payload
    key = b"\x11\x22\x33\x44"
    return out + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_accept(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


class RawWSServer(Protocol):
    """A WebSocket server as bytes: answers the handshake with 101 followed by ``then``.

    ``requests`` holds the handshake heads it got; ``received`` what came after.
    """

    def __init__(self, then: bytes = b"") -> None:
        self.then = then
        self.buffer = b""
        self.requests: list[bytes] = []
        self.received = b""
        self.lost_reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.requests:
            self.received += data
            return
        self.buffer += data
        top, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        self.requests.append(top)
        key = b""
        for line in top.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws_accept(key) + b"\r\n\r\n" + self.then
        )
        self.received += rest

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: N802, B008
        self.lost_reason = reason
