"""Unit tests of the client's HTTP/2 streams against an in-memory ``h2`` server (no sockets)."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
from test_http_client_connection import Events, Sink
from twisted.internet.defer import CancelledError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from aleph_tx.errors import ConnectionLostError
from aleph_tx.http._client.h2 import H2ClientConnection
from aleph_tx.http._client.pool import ClientRequest


class Pair:
    """A client H2ClientConnection and an h2 server, bytes moved by :meth:`pump`."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.events = Events()
        self.done = self.events.reusable
        self.client = H2ClientConnection(self.transport, self.events, "key", 65536)
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.initiate_connection()
        self.events_seen: list[Any] = []
        self.pump()

    def pump(self) -> None:
        for _ in range(20):
            out = self.transport.value()
            self.transport.clear()
            if out:
                self.events_seen += self.server.receive_data(out)
            back = self.server.data_to_send()
            if back:
                self.client.data_received(back)
            if not out and not back:
                return

    def get(self, path: bytes = b"/", body: bytes | None = None) -> Any:
        req = ClientRequest(
            b"POST" if body else b"GET", b"https", b"x", path, path, [(b"host", b"x")], body, None
        )
        stream = self.client.send(req)
        self.pump()
        return stream

    def respond(self, stream_id: int, data: bytes, end: bool = True) -> None:
        self.server.send_headers(stream_id, [(b":status", b"200")])
        self.send(stream_id, data, end)

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        size = self.server.max_outbound_frame_size
        for i in range(0, len(data), size):
            last = i + size >= len(data)
            self.server.send_data(stream_id, data[i : i + size], end_stream=end and last)
        if not data and end:
            self.server.end_stream(stream_id)
        self.pump()


class H2UnitTests(SynchronousTestCase):
    def test_request_and_response(self) -> None:
        p = Pair()
        st = p.get(b"/hello")
        received = [e for e in p.events_seen if isinstance(e, h2.events.RequestReceived)]
        self.assertEqual(dict(received[0].headers)[b":path"], b"/hello")
        self.assertEqual(dict(received[0].headers)[b":authority"], b"x")
        self.assertNotIn(b"host", dict(received[0].headers))
        p.respond(st.stream_id, b"hi")
        resp = self.successResultOf(st.head)
        self.assertEqual(resp.status, 200)
        body = Sink()
        resp.deliver_body(body)
        self.assertEqual(body.data, b"hi")
        self.assertTrue(body.done)
        self.assertEqual(p.done, [p.client])
        self.assertFalse(p.client.in_use())

    def test_paused_stream_is_not_acknowledged_and_others_continue(self) -> None:
        p = Pair()
        a, b = p.get(b"/a"), p.get(b"/b")
        p.respond(a.stream_id, b"x" * 60000, end=False)
        resp_a = self.successResultOf(a.head)
        body_a = Sink()
        resp_a.deliver_body(body_a)
        self.assertEqual(len(body_a.data), 60000)
        window_after_read = p.server.local_flow_control_window(a.stream_id)
        resp_a.pause_reading()
        p.send(a.stream_id, b"y" * 1000)
        self.assertEqual(len(body_a.data), 60000)  # held, not delivered
        # not acknowledged: the server's window for the stream did not reopen
        self.assertEqual(p.server.local_flow_control_window(a.stream_id), window_after_read - 1000)
        # stream b is unaffected
        p.respond(b.stream_id, b"bee")
        body_b = Sink()
        self.successResultOf(b.head).deliver_body(body_b)
        self.assertEqual(body_b.data, b"bee")
        resp_a.resume_reading()
        self.assertEqual(len(body_a.data), 61000)

    def test_request_body_respects_flow_control(self) -> None:
        p = Pair()
        st = p.get(b"/up", body=b"z" * 200_000)
        data = b"".join(e.data for e in p.events_seen if isinstance(e, h2.events.DataReceived))
        self.assertEqual(len(data), 65535)  # the server's initial window
        self.assertFalse(st.end_sent)
        for e in p.events_seen:
            if isinstance(e, h2.events.DataReceived):
                p.server.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        p.events_seen.clear()
        for _ in range(10):
            p.pump()
            for e in list(p.events_seen):
                if isinstance(e, h2.events.DataReceived):
                    data += e.data
                    p.server.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            p.events_seen.clear()
        self.assertEqual(len(data), 200_000)
        self.assertTrue(st.end_sent)

    def test_cancel_resets_only_the_stream(self) -> None:
        p = Pair()
        st = p.get(b"/slow")
        st.head.cancel()
        self.failureResultOf(st.head, CancelledError)
        p.pump()
        resets = [e for e in p.events_seen if isinstance(e, h2.events.StreamReset)]
        self.assertEqual([r.stream_id for r in resets], [st.stream_id])
        self.assertTrue(p.client.can_take())
        self.assertFalse(p.client.in_use())

    def test_server_reset_and_connection_lost(self) -> None:
        p = Pair()
        a, b = p.get(b"/a"), p.get(b"/b")
        p.server.reset_stream(a.stream_id)
        p.pump()
        f = self.failureResultOf(a.head, ConnectionLostError)
        self.assertIn("reset", str(f.value))
        p.client.connection_lost(Failure(ConnectionError("gone")))
        self.failureResultOf(b.head, ConnectionLostError)
        self.assertFalse(p.client.can_take())


class H2GoawayTests(SynchronousTestCase):
    def test_goaway_fails_unprocessed_streams_as_retryable(self) -> None:
        p = Pair()
        a, b = p.get(b"/a"), p.get(b"/b")
        p.server.close_connection(last_stream_id=a.stream_id)
        p.pump()
        self.assertNoResult(a.head)
        self.failureResultOf(b.head, ConnectionLostError)
        self.assertTrue(b.retryable)
        self.assertFalse(a.retryable)
        self.assertEqual(p.events.gone, [p.client])
        self.assertFalse(p.client.can_take())
