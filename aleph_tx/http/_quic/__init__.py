"""QUIC on a Twisted UDP port, shared by the HTTP/3 server and client.

aioquic is sans-IO: a ``QuicConnection`` takes datagrams and the time and hands
back datagrams, a timer deadline and events. This package runs it on the reactor
with no second event loop:

- :mod:`.endpoint`: :class:`~.endpoint.QuicEndpoint`, a ``DatagramProtocol`` that
  routes datagrams to connections by connection ID (several per port; migration,
  Retry and version negotiation as aioquic provides) and
  :class:`~.endpoint.QuicDriver`, one per connection: its one timer, its sends,
  its events handed to a :class:`~.endpoint.ConnectionHandler`.
- :mod:`.flow`: :class:`~.flow.FlowControlledConnection`, a ``QuicConnection``
  whose receive credit on request streams follows what the application took
  (backpressure), and whose send buffers can be measured.
- :mod:`.h3`: what the HTTP/3 server and client share: aioquic's
  ``H3Connection`` with GOAWAY and the dispatch of request-stream events, the body
  writer (an ``IConsumer`` whose producer is paused while the peer does not read)
  and the credit producer of received bodies.
- :mod:`.config`: ``QuicConfiguration`` from the TLS objects aleph_tx already
  takes (``CertificateOptions``, ``ssl:`` descriptions, client contexts).

Importing it needs aioquic (``pip install aleph_tx[http3]``).
"""
