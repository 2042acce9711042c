"""WebSockets: autobahn's protocols as duplex streams, server and client."""
