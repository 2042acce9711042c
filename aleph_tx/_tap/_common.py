"""Option helpers shared by the ``twist aleph-*`` plugins.

Every bad value raises :class:`twisted.python.usage.UsageError` with a one-line
message naming it. :class:`BriefOptions` turns it into one line on stderr and exit
status 64 (``EX_USAGE``): never a traceback, never the whole usage text (``--help``
has that). :class:`ServerService` does the same for an address that cannot be bound.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.python import usage
from twisted.python.usage import UsageError

#: ``EX_USAGE`` (sysexits.h), what ``twist`` exits with for a usage error.
EX_USAGE = 64

__all__ = [
    "BriefOptions",
    "ServerService",
    "load_callable",
    "non_negative_float",
    "non_negative_int",
    "port_number",
    "positive_int",
]


def load_callable(reference: str, option: str = "--handler") -> Callable[..., Any]:
    """The callable named by ``pkg.mod:fn`` (``fn`` may be dotted: ``mod:Class.method``).

    :raises UsageError: naming ``reference`` if it is malformed, the module cannot be
        imported, the attribute is missing or not callable.
    """
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise UsageError(f"{option} must look like pkg.module:function, not {reference!r}")
    module_name, _, attr_path = reference.partition(":")
    if not module_name or not attr_path:
        raise UsageError(f"{option} must look like pkg.module:function, not {reference!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(
            f"{option} {reference!r}: cannot import {module_name!r} ({type(e).__name__}: {e})"
        ) from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"{option} {reference!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(obj):
        raise UsageError(f"{option} {reference!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _number(value: Any, kind: type, option: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be a number, not {value!r}") from None


def non_negative_float(value: Any, option: str) -> float:
    """``value`` as a float >= 0. :raises UsageError: naming the bad value."""
    n = _number(value, float, option)
    if not n >= 0 or n == float("inf"):
        raise UsageError(f"{option} must be a number >= 0, not {value!r}")
    return float(n)


def non_negative_int(value: Any, option: str) -> int:
    """``value`` as an int >= 0. :raises UsageError: naming the bad value."""
    n = _number(value, int, option)
    if n < 0:
        raise UsageError(f"{option} must be an integer >= 0, not {value!r}")
    return int(n)


def positive_int(value: Any, option: str) -> int:
    """``value`` as an int >= 1. :raises UsageError: naming the bad value."""
    n = _number(value, int, option)
    if n < 1:
        raise UsageError(f"{option} must be an integer >= 1, not {value!r}")
    return int(n)


def port_number(value: Any, option: str = "--port") -> int:
    """``value`` as a port 0..65535. :raises UsageError: naming the bad value."""
    n = _number(value, int, option)
    if not 0 <= n <= 65535:
        raise UsageError(f"{option} must be a port number 0..65535, not {value!r}")
    return int(n)


class BriefOptions(usage.Options):
    """Options whose errors are one line under ``twist``: ``<command>: <message>``, exit 64.

    ``twist`` (and ``twistd``) would print the error followed by the whole usage
    text; as their subcommand (``parent`` is set), a bad option or value is one line
    on stderr instead. Used directly, ``parseOptions`` raises ``UsageError`` as usual.
    """

    command = "aleph"
    parent: Any = None

    def parseOptions(self, options: Any = None) -> None:  # noqa: N802 - Twisted's name
        """Parse; under ``twist`` a bad option or value exits 64 with one line naming it."""
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except UsageError as e:
            if self.parent is None:
                raise
            sys.stderr.write(f"{self.command}: {e} (see --help)\n")
            raise SystemExit(EX_USAGE) from None


class ServerService(Service):
    """A service that starts something listening and closes it gracefully on stop.

    An address that cannot be bound ends the process with one line on stderr
    (exit 1), not a traceback.

    :param start: called by ``startService``; returns an object with ``close() -> Deferred``
        (an :class:`aleph_tx._server.Server`, or a stream-backed wrapper).
    :param command: the name on that line.
    """

    def __init__(self, start: Callable[[], Any], command: str = "aleph") -> None:
        self._start = start
        self._command = command
        self.server: Any = None

    def startService(self) -> None:  # noqa: N802
        super().startService()  # type: ignore[no-untyped-call]
        try:
            self.server = self._start()
        except (CannotListenError, OSError) as e:
            sys.stderr.write(f"{self._command}: {e}\n")
            raise SystemExit(1) from None

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]
        if self.server is not None:
            return self.server.close()
        return None
