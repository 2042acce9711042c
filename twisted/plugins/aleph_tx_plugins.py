"""Twisted plugins for aleph_tx: ``twist aleph-http``, ``twist aleph-tcp``, ``twist aleph-udp``.

``twist`` imports every plugin just to list them, so this file imports nothing of
aleph_tx: each ``aleph_tx._tap`` module loads only when its subcommand runs.
This directory has no ``__init__.py`` (``twisted.plugins`` is Twisted's own package).
"""

from twisted.application.service import ServiceMaker

aleph_http = ServiceMaker(
    "aleph-http",
    "aleph_tx._tap.http",
    "An aleph_tx HTTP server (a demo, a Ring handler or a WSGI app).",
    "aleph-http",
)
aleph_tcp = ServiceMaker(
    "aleph-tcp",
    "aleph_tx._tap.tcp",
    "An aleph_tx TCP server (echo unless --handler is given).",
    "aleph-tcp",
)
aleph_udp = ServiceMaker(
    "aleph-udp",
    "aleph_tx._tap.udp",
    "An aleph_tx UDP socket (echo unless --handler is given).",
    "aleph-udp",
)
