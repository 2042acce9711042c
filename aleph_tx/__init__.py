"""aleph_tx: Aleph's asynchronous networking (streams, HTTP, WebSockets, TCP, UDP) on Twisted.

Import the part you need (``from aleph_tx import stream as s``, ``from aleph_tx import
http``): importing the package itself loads nothing else.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
