"""What the client's pool remembers about HTTP/3 alternatives (RFC 7838), pure.

An ``alt-svc`` response field names where else an origin can be reached; the
client uses its ``h3`` entries. :class:`AltSvcCache` keeps, per origin
(``(scheme, host, port)``), the first ``h3`` alternative of the last ``alt-svc``
field seen, until its ``ma`` (max age) runs out; a new field replaces it, ``clear``
forgets it (RFC 7838 §3). An alternative whose QUIC handshake failed is *broken*
for :data:`BROKEN_FOR` seconds, twice as long after each further failure in a row
(up to :data:`MAX_BROKEN_FOR`); a success forgets the failures. Times are clock
readings given by the caller: nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["BROKEN_FOR", "MAX_BROKEN_FOR", "MAX_ENTRIES", "AltService", "AltSvcCache", "parse_alt_svc"]

#: Seconds an alternative is not tried again after its QUIC handshake failed: 5
#: minutes, as Chrome does for a first failure (UDP blocked on the network, most often).
BROKEN_FOR = 300.0
#: The longest it stays broken after repeated failures (doubling each time): 48 hours.
MAX_BROKEN_FOR = 48 * 3600.0

#: The default ``ma`` of an alternative (RFC 7838 §3.1: 24 hours).
DEFAULT_MAX_AGE = 86400
#: Origins remembered at most (each table); the oldest entry goes first.
MAX_ENTRIES = 4096

Origin = tuple[str, str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class AltService:
    """One HTTP/3 alternative of an ``alt-svc`` field (RFC 7838 §3).

    :ivar host: the alternative host (``""``: the origin's own host).
    :ivar port: its UDP port.
    :ivar max_age: seconds it may be remembered (``ma``, default 86400).
    """

    host: str
    port: int
    max_age: int = DEFAULT_MAX_AGE


_ALT_SVC = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)="([^"]*)"((?:\s*;\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:"[^"]*"|[^,;\s]*))*)\s*(?:,|$)"""
)
_PARAM = re.compile(r"""\s*;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=(?:"([^"]*)"|([^,;\s]*))""")


def parse_alt_svc(value: str) -> list[AltService] | None:
    """The ``h3`` alternatives an ``alt-svc`` response field offers, in its order.

    :returns: ``None`` for ``clear`` (forget the alternatives of this origin, RFC 7838
        §3); otherwise the ``h3`` entries (other protocols, such as ``h3-29`` or
        ``h2``, and malformed entries are skipped).
    """
    if value.strip() == "clear":
        return None
    found: list[AltService] = []
    for match in _ALT_SVC.finditer(value):
        protocol, authority, params = match.groups()
        if protocol != "h3":
            continue
        host, sep, port_text = authority.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            continue
        max_age = DEFAULT_MAX_AGE
        for name, quoted, plain in _PARAM.findall(params):
            text = quoted if quoted else plain
            if name == "ma" and text.isdigit():
                max_age = int(text)
        found.append(AltService(host.strip("[]"), int(port_text), max_age))
    return found


class AltSvcCache:
    """The HTTP/3 alternative of each origin, and the broken ones (see the module docstring)."""

    __slots__ = ("_alternatives", "_broken")

    def __init__(self) -> None:
        self._alternatives: dict[Origin, tuple[AltService, float]] = {}  # -> (it, expiry)
        self._broken: dict[tuple[Origin, str, int], tuple[float, int]] = {}  # -> (until, failures)

    def learn(self, origin: Origin, value: str, now: float) -> None:
        """A response of ``origin`` carried ``alt-svc: value`` at ``now``."""
        found = parse_alt_svc(value)
        if not found:  # clear, or no h3 entry: it replaces what was known (RFC 7838 §3)
            self._alternatives.pop(origin, None)
            return
        alt = found[0]
        table = self._alternatives
        if origin not in table and len(table) >= MAX_ENTRIES:
            del table[next(iter(table))]
        table[origin] = (alt, now + alt.max_age)

    def lookup(self, origin: Origin, now: float) -> AltService | None:
        """The alternative to use for ``origin`` at ``now``: known, not expired, not broken."""
        known = self._alternatives.get(origin)
        if known is None:
            return None
        alt, expiry = known
        if now >= expiry:
            del self._alternatives[origin]
            return None
        if self.broken_until(origin, alt, now) is not None:
            return None
        return alt

    def broken_until(self, origin: Origin, alt: AltService, now: float) -> float | None:
        """Until when ``alt`` of ``origin`` is broken, or ``None`` if it may be tried."""
        mark = self._broken.get((origin, alt.host, alt.port))
        if mark is None or now >= mark[0]:
            return None
        return mark[0]

    def failed(self, origin: Origin, alt: AltService, now: float) -> float:
        """A QUIC handshake to ``alt`` failed at ``now``; returns until when it is broken."""
        key = (origin, alt.host, alt.port)
        mark = self._broken.get(key)
        failures = 1 if mark is None else mark[1] + 1
        until = now + min(BROKEN_FOR * (1 << min(failures - 1, 32)), MAX_BROKEN_FOR)
        table = self._broken
        if mark is None and len(table) >= MAX_ENTRIES:
            del table[next(iter(table))]
        table[key] = (until, failures)
        return until

    def succeeded(self, origin: Origin, alt: AltService) -> None:
        """A QUIC handshake to ``alt`` succeeded: forget its failures."""
        self._broken.pop((origin, alt.host, alt.port), None)
