"""Twisted plugin for aleph_tx's ``reuseport:`` server endpoint string.

``serverFromString(reactor, "reuseport:8080:interface=127.0.0.1")`` (and so every
``--listen`` option of ``twist``) finds this parser by scanning the plugins. Like
``aleph_tx_plugins.py``, this file imports nothing of aleph_tx: the parser loads
``aleph_tx._reuseport`` only when a ``reuseport:`` string is parsed.
This directory has no ``__init__.py`` (``twisted.plugins`` is Twisted's own package).
"""

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _ReusePortParser:
    """``reuseport:PORT[:interface=ADDR][:backlog=N]``: a TCP port shared with SO_REUSEPORT (Linux)."""

    prefix = "reuseport"

    def parseStreamServer(  # noqa: N802
        self, reactor: IReactorCore, *args: object, **kwargs: object
    ) -> IStreamServerEndpoint:
        from aleph_tx._reuseport import parse_reuseport

        return parse_reuseport(reactor, *args, **kwargs)


aleph_tx_reuseport = _ReusePortParser()
