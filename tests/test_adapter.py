"""Unit tests of aleph_tx._adapter over StringTransport (no sockets, no reactor)."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IPushProducer,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from aleph_tx._adapter import ConnectionStream, Sender, SenderState, StreamProtocol, to_bytes
from aleph_tx._receiver import Receiver
from aleph_tx.errors import BackpressureError
from aleph_tx.stream import MAX_PENDING, Stream


class _Recorder(StreamProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def connection_ready(self) -> None:
        self.events.append("ready")

    def connection_failed(self, reason: Failure) -> None:
        self.events.append("failed")

    def connection_closed(self, reason: Failure) -> None:
        self.events.append("closed")


def connected() -> tuple[_Recorder, StringTransport]:
    proto = _Recorder()
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


class InterfaceTests(SynchronousTestCase):
    def test_protocol_provides_its_interfaces(self) -> None:
        proto, _ = connected()
        for iface in (IProtocol, IPushProducer, IConsumer, IHalfCloseableProtocol, IHandshakeListener):
            self.assertTrue(verifyObject(iface, proto), iface)

    def test_halves_provide_their_interfaces(self) -> None:
        st = Stream()
        self.assertTrue(verifyObject(IConsumer, Receiver(st.put, st.close)))
        self.assertTrue(verifyObject(IPushProducer, Sender(lambda m: None, lambda: None)))

    def test_registers_as_streaming_producer(self) -> None:
        proto, transport = connected()
        self.assertIs(transport.producer, proto)
        self.assertTrue(transport.streaming)
        self.assertEqual(proto.events, ["ready"])

    def test_connection_stream_is_a_stream(self) -> None:
        proto, _ = connected()
        self.assertIsInstance(proto.stream, Stream)
        self.assertIsInstance(proto.stream, ConnectionStream)


class InboundTests(SynchronousTestCase):
    def test_pending_put_pauses_reading_until_taken(self) -> None:
        proto, transport = connected()
        proto.dataReceived(b"one")
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.successResultOf(proto.stream.take()), b"one")
        self.assertEqual(transport.producerState, "producing")

    def test_waiting_take_does_not_pause(self) -> None:
        proto, transport = connected()
        d = proto.stream.take()
        proto.dataReceived(b"x")
        self.assertEqual(self.successResultOf(d), b"x")
        self.assertEqual(transport.producerState, "producing")

    def test_several_pending_puts_resume_once_all_taken(self) -> None:
        proto, transport = connected()
        proto.dataReceived(b"a")
        proto.dataReceived(b"b")  # TLS may deliver more than one chunk per read
        self.successResultOf(proto.stream.take())
        self.assertEqual(transport.producerState, "paused")
        self.successResultOf(proto.stream.take())
        self.assertEqual(transport.producerState, "producing")

    def test_peer_half_close_ends_input_only(self) -> None:
        proto, transport = connected()
        proto.dataReceived(b"last")
        proto.readConnectionLost()
        st = proto.stream
        self.assertFalse(st.closed)
        self.assertEqual(self.successResultOf(st.take()), b"last")
        self.assertEqual(self.successResultOf(st.take("end")), "end")
        self.assertTrue(st.drained)
        self.assertTrue(self.successResultOf(st.put(b"reply")))
        self.assertEqual(transport.value(), b"reply")

    def test_connection_lost_drains_after_received_data(self) -> None:
        proto, _ = connected()
        proto.dataReceived(b"kept")
        proto.connectionLost(Failure(ConnectionDone()))
        st = proto.stream
        self.assertTrue(st.closed)
        self.assertFalse(st.drained)
        self.assertEqual(self.successResultOf(st.take()), b"kept")
        self.assertEqual(self.successResultOf(st.take("end")), "end")
        self.assertTrue(st.drained)
        self.assertEqual(proto.events, ["ready", "closed"])

    def test_unclean_loss_is_in_description(self) -> None:
        proto, _ = connected()
        proto.connectionLost(Failure(ConnectionLost("reset")))
        self.assertIsInstance(proto.stream.description()["error"], ConnectionLost)

    def test_on_drained_runs_before_waiting_take_resumes(self) -> None:
        proto, _ = connected()
        seen: list[bool] = []
        calls: list[str] = []
        proto.stream.on_drained(lambda: calls.append("drained"))
        proto.stream.take("end").addCallback(lambda _: seen.append(bool(calls)))
        proto.readConnectionLost()
        self.assertEqual(seen, [True])

    def test_withdrawn_take_then_end_of_input(self) -> None:
        proto, _ = connected()
        withdrawn = proto.stream.take()
        withdrawn.addErrback(lambda f: None)
        withdrawn.cancel()
        live = proto.stream.take("end")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(live), "end")
        self.assertEqual(proto.events, ["ready", "closed"])

    def test_one_producer_at_a_time(self) -> None:
        st = Stream()
        r = Receiver(st.put, st.close)
        producer = StringTransport()
        r.registerProducer(producer, True)
        self.assertRaises(RuntimeError, r.registerProducer, StringTransport(), True)
        r.unregisterProducer()
        r.registerProducer(StringTransport(), True)

    def test_registered_producer_is_paused(self) -> None:
        st = Stream()
        r = Receiver(st.put, st.close)
        producer = StringTransport()
        r.registerProducer(producer, True)
        r.write(b"chunk")
        self.assertEqual(producer.producerState, "paused")
        self.successResultOf(st.take())
        self.assertEqual(producer.producerState, "producing")

    def test_pull_producer_refused(self) -> None:
        st = Stream()
        r = Receiver(st.put, st.close)
        self.assertRaises(ValueError, r.registerProducer, StringTransport(), False)


class OutboundTests(SynchronousTestCase):
    def test_put_writes_at_once_when_room(self) -> None:
        proto, transport = connected()
        d = proto.stream.put(b"hi")
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(transport.value(), b"hi")

    def test_put_converts_like_to_bytes(self) -> None:
        proto, transport = connected()
        for msg in ("é", bytearray(b"b"), memoryview(b"m")):
            self.assertTrue(self.successResultOf(proto.stream.put(msg)))
        self.assertEqual(transport.value(), "é".encode() + b"bm")

    def test_bad_message_fails_put_connection_stays_open(self) -> None:
        proto, transport = connected()
        f = self.failureResultOf(proto.stream.put(12345), TypeError)
        self.assertIn("int", str(f.value))
        self.assertFalse(transport.disconnecting)
        self.assertTrue(self.successResultOf(proto.stream.put(b"ok")))
        self.assertEqual(transport.value(), b"ok")

    def test_put_none_raises(self) -> None:
        proto, _ = connected()
        self.assertRaises(ValueError, proto.stream.put, None)

    def test_paused_transport_holds_puts_in_order(self) -> None:
        proto, transport = connected()
        proto.pauseProducing()
        self.assertIs(proto.sender.state, SenderState.PAUSED)
        d1 = proto.stream.put(b"1")
        d2 = proto.stream.put(b"2")
        self.assertNoResult(d1)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(proto.stream.description()["pending_puts"], 2)
        proto.resumeProducing()
        self.assertTrue(self.successResultOf(d1))
        self.assertTrue(self.successResultOf(d2))
        self.assertEqual(transport.value(), b"12")

    def test_pause_during_flush_stops_it(self) -> None:
        proto, transport = connected()
        proto.pauseProducing()
        d1 = proto.stream.put(b"1")
        d2 = proto.stream.put(b"2")
        d1.addCallback(lambda _: proto.pauseProducing())
        proto.resumeProducing()
        self.successResultOf(d1)
        self.assertNoResult(d2)
        self.assertEqual(transport.value(), b"1")

    def test_lost_connection_fires_waiting_puts_false(self) -> None:
        proto, _ = connected()
        proto.pauseProducing()
        d = proto.stream.put(b"never sent")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertIs(self.successResultOf(d), False)
        self.assertIs(self.successResultOf(proto.stream.put(b"late")), False)

    def test_stop_producing_is_loss(self) -> None:
        proto, _ = connected()
        proto.pauseProducing()
        d = proto.stream.put(b"x")
        proto.stopProducing()
        self.assertIs(self.successResultOf(d), False)
        self.assertIs(proto.sender.state, SenderState.CLOSED)

    def test_try_put_times_out_and_withdraws(self) -> None:
        proto, transport = connected()
        clock = Clock()
        proto.pauseProducing()
        d = proto.stream.try_put(b"slow", 1.0, "timeout", clock=clock)
        self.assertNoResult(d)
        clock.advance(1.0)
        self.assertEqual(self.successResultOf(d), "timeout")
        self.assertEqual(clock.getDelayedCalls(), [])
        proto.resumeProducing()
        self.assertEqual(transport.value(), b"")

    def test_try_put_accepted_cancels_timer(self) -> None:
        proto, _ = connected()
        clock = Clock()
        proto.pauseProducing()
        d = proto.stream.try_put(b"x", 1.0, "timeout", clock=clock)
        proto.resumeProducing()
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_withdraws_put(self) -> None:
        proto, transport = connected()
        proto.pauseProducing()
        d = proto.stream.put(b"x")
        d.cancel()
        self.failureResultOf(d)
        proto.resumeProducing()
        self.assertEqual(transport.value(), b"")

    def test_pending_limit(self) -> None:
        proto, _ = connected()
        proto.pauseProducing()
        for _ in range(MAX_PENDING):
            proto.stream.put(b"x")
        self.failureResultOf(proto.stream.put(b"x"), BackpressureError)


class CloseTests(SynchronousTestCase):
    def test_close_when_open_closes_at_once(self) -> None:
        proto, transport = connected()
        proto.stream.put(b"bye")
        proto.stream.close()
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.value(), b"bye")
        self.assertTrue(proto.stream.closed)
        self.assertIs(self.successResultOf(proto.stream.put(b"late")), False)

    def test_close_when_paused_flushes_first(self) -> None:
        proto, transport = connected()
        proto.pauseProducing()
        d = proto.stream.put(b"queued")
        proto.stream.close()
        self.assertIs(proto.sender.state, SenderState.CLOSING)
        self.assertFalse(transport.disconnecting)
        proto.resumeProducing()
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(transport.value(), b"queued")
        self.assertTrue(transport.disconnecting)

    def test_close_is_idempotent_and_on_closed_once(self) -> None:
        proto, _ = connected()
        calls: list[int] = []
        proto.stream.on_closed(lambda: calls.append(1))
        proto.stream.close()
        proto.stream.close()
        proto.connectionLost(Failure(ConnectionDone()))
        proto.stream.on_closed(lambda: calls.append(2))
        self.assertEqual(calls, [1, 2])

    def test_close_after_loss_is_harmless(self) -> None:
        proto, transport = connected()
        proto.connectionLost(Failure(ConnectionDone()))
        proto.stream.close()
        self.assertFalse(transport.disconnecting)

    def test_graceful_close_and_abort(self) -> None:
        proto, transport = connected()
        proto.graceful_close()
        self.assertTrue(transport.disconnecting)
        proto2, transport2 = connected()
        proto2.abort()
        self.assertTrue(transport2.disconnecting)

    def test_description(self) -> None:
        proto, _ = connected()
        proto.dataReceived(b"abc")
        desc = proto.stream.description()
        for key in ("buffer_size", "buffer_count", "pending_puts", "pending_takes", "closed", "drained"):
            self.assertIn(key, desc)
        self.assertEqual(desc["type"], "tcp")
        self.assertEqual(desc["bytes_received"], 3)
        self.assertTrue(desc["reading_paused"])
        self.assertEqual(desc["output_state"], "open")


class ToBytesTests(SynchronousTestCase):
    def test_accepts_byte_likes_and_str(self) -> None:
        self.assertEqual(to_bytes(b"a"), b"a")
        self.assertEqual(to_bytes("a"), b"a")
        self.assertEqual(to_bytes(bytearray(b"a")), b"a")

    def test_rejects_others_with_type_error(self) -> None:
        for bad in (1, 1.5, object()):
            self.assertRaises(TypeError, to_bytes, bad)


def _receivers() -> list[tuple[str, Stream, Receiver]]:
    """A Receiver with the stream's callback put (ConnectionStream's), and one with its
    Deferred put (request bodies): they must behave the same."""
    cs = ConnectionStream(Sender(lambda m: None, lambda: None))
    st = Stream()
    return [
        ("put_cb", cs, Receiver(cs._receive, cs._end_input, None, cs._receive_cb)),
        ("deferred put", st, Receiver(st.put, st.close)),
    ]


class BatchTests(SynchronousTestCase):
    """``Receiver.write_many``: a read carrying many messages (WebSocket frames)."""

    def test_a_burst_over_the_pending_limit_arrives_whole_and_in_order(self) -> None:
        for name, st, r in _receivers():
            with self.subTest(name):
                producer = StringTransport()
                r.registerProducer(producer, True)
                msgs = [b"%d" % i for i in range(MAX_PENDING + 5000)]
                r.write_many(msgs[:10], 20)
                r.write_many(msgs[10:], 100)  # while paused: waits behind the first batch
                self.assertEqual(producer.producerState, "paused")
                self.assertEqual(r.bytes_received, 120)
                got = [self.successResultOf(st.take()) for _ in msgs]
                self.assertEqual(got, msgs)
                self.assertEqual(producer.producerState, "producing")

    def test_a_waiting_take_gets_the_first_and_the_rest_wait(self) -> None:
        for name, st, r in _receivers():
            with self.subTest(name):
                producer = StringTransport()
                r.registerProducer(producer, True)
                d = st.take()
                r.write_many([b"a", b"b", b"c"], 3)
                self.assertEqual(self.successResultOf(d), b"a")
                self.assertEqual(producer.producerState, "paused")  # b is pending, c waits
                self.assertEqual(self.successResultOf(st.take()), b"b")
                self.assertEqual(self.successResultOf(st.take()), b"c")
                self.assertEqual(producer.producerState, "producing")

    def test_same_as_one_write_per_message(self) -> None:
        for name, st, r in _receivers():
            with self.subTest(name):
                takes = [st.take() for _ in range(2)]
                r.write_many([b"x", b"y"], 2)
                r.write(b"z")
                r.finish()
                self.assertEqual([self.successResultOf(d) for d in takes], [b"x", b"y"])
                self.assertEqual(self.successResultOf(st.take()), b"z")
                self.assertEqual(self.successResultOf(st.take("end")), "end")

    def test_finished_while_delivering_drops_the_rest_as_write_does(self) -> None:
        for name, st, r in _receivers():
            with self.subTest(name):
                d = st.take()
                d.addCallback(lambda _, r=r: r.finish())  # the connection is lost in a callback
                r.write_many([b"first", b"dropped"], 12)
                self.assertEqual(self.successResultOf(d), None)
                self.assertEqual(self.successResultOf(st.take("end")), "end")
                r.write_many([b"after"], 5)
                self.assertEqual(r.bytes_received, 12)


class SenderReadyTests(SynchronousTestCase):
    """``Sender.ready``: true exactly when a message sent now is written at once."""

    def test_ready_follows_pause_queue_and_close(self) -> None:
        written: list[bytes] = []
        sender = Sender(written.append, lambda: None)
        self.assertTrue(sender.ready)
        sender.pauseProducing()
        self.assertFalse(sender.ready)
        d = sender.send(b"queued")
        sender.resumeProducing()
        self.assertTrue(self.successResultOf(d))
        self.assertTrue(sender.ready)
        sender.pauseProducing()
        queued = sender.send(b"withdrawn")
        queued.addErrback(lambda f: None)
        queued.cancel()
        self.assertFalse(sender.ready)  # still paused
        sender.resumeProducing()
        self.assertTrue(sender.ready)
        sender.close()
        self.assertFalse(sender.ready)
        self.assertEqual(written, [b"queued"])

    def test_not_ready_once_lost(self) -> None:
        sender = Sender(lambda m: None, lambda: None)
        sender.lost()
        self.assertFalse(sender.ready)
        self.assertFalse(self.successResultOf(sender.send(b"x")))


class TCPPutTests(SynchronousTestCase):
    """ConnectionStream.put writes bytes itself while the Sender is ready (the TCP fast
    path); anything else goes through the Sender, with the same results."""

    def test_bytes_are_written_without_the_sender(self) -> None:
        proto, transport = connected()
        sends: list[object] = []
        original = proto.sender.send
        proto.sender.send = lambda msg: sends.append(msg) or original(msg)  # type: ignore[method-assign]
        self.assertTrue(self.successResultOf(proto.stream.put(b"fast")))
        self.assertEqual(sends, [])
        self.assertTrue(self.successResultOf(proto.stream.put(bytearray(b"slow"))))
        self.assertEqual(sends, [b"slow"])
        self.assertEqual(transport.value(), b"fastslow")
        self.assertEqual(proto.sender.bytes_sent, 8)

    def test_while_paused_bytes_queue_in_order(self) -> None:
        proto, transport = connected()
        proto.pauseProducing()
        ds = [proto.stream.put(b"a"), proto.stream.put(b"b")]
        self.assertEqual(transport.value(), b"")
        self.assertNoResult(ds[0])
        proto.resumeProducing()
        self.assertEqual([self.successResultOf(d) for d in ds], [True, True])
        self.assertTrue(self.successResultOf(proto.stream.put(b"c")))
        self.assertEqual(transport.value(), b"abc")

    def test_after_close_bytes_are_refused(self) -> None:
        proto, transport = connected()
        proto.stream.close()
        self.assertFalse(self.successResultOf(proto.stream.put(b"late")))
        self.assertEqual(transport.value(), b"")


def test_the_stream_graph_puts_into_a_connection_without_a_deferred() -> None:
    """``connect`` delivers to a network stream through ``put_now`` (``True`` when
    written at once): no fired Deferred per message on the echo path."""
    from aleph_tx import stream as s
    from aleph_tx.stream._graph import _fast_put

    written: list[bytes] = []
    sender = Sender(written.append, lambda: None)
    conn = ConnectionStream(sender)
    assert _fast_put(conn) == conn.put_now
    assert conn.put_now(b"now") is True and written == [b"now"]
    src = s.stream()
    s.connect(src, conn)
    for chunk in (b"a", b"b"):
        assert src.put(chunk).result is True
    assert written == [b"now", b"a", b"b"]
    sender.pauseProducing()
    d = conn.put(b"later")  # queued: a real Deferred
    assert not d.called
    sender.resumeProducing()
    assert d.result is True and written[-1] == b"later"
