"""The Ring core: pure functions from plain values to plain values (sans-IO, as h11).

Nothing here imports Twisted or touches a socket: request dicts, response heads,
body coercion, limits, content codings, SSE framing and upgrade checks, each tested
with tables of inputs and outputs. Every front (HTTP/1.1, twisted.web, HTTP/2,
HTTP/3) and the client build on it.
"""
