"""``wrap_wsgi(app)``: host a WSGI application (PEP 3333) such as Flask or Django.

The app runs in the reactor's thread pool. ``wsgi.input`` reads the request body
stream through :func:`aleph_tx.byte_streams.to_input_stream` (a read blocks the
worker thread, never the reactor). The response iterable is streamed out: each
chunk is put into the response body stream from the worker thread, which waits
until the connection accepts it (backpressure); a list or tuple result (the
common case) is sent whole with its length.

If the client goes away, the response body is dropped: the app's next write (or
the next chunk of its iterable) ends the worker's job quietly, so a worker never
waits forever on a connection that is gone and the process can exit. An app that
blocks on something else (a sleep, a lock) still holds its thread until it returns:
Python cannot stop a thread, so ``shutdown_timeout`` bounds the connections, not the
app's own work.
"""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from aleph_tx import byte_streams
from aleph_tx._threads import call_on_reactor, watch_shutdown
from aleph_tx.errors import ConnectionLostError
from aleph_tx.stream import Stream

__all__ = ["build_environ", "wrap_wsgi"]

_log = Logger()

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Errors:
    """``wsgi.errors``: lines go to the Twisted log."""

    def write(self, text: str) -> None:
        if text.strip():
            _log.error("wsgi.errors: {text}", text=text.rstrip())

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


class _BodyFailed:
    """Put into the body stream when the app fails mid-body: the writer cuts the connection."""

    def __repr__(self) -> str:
        return "<WSGI application failed mid-body>"


def build_environ(req: dict[str, Any], wsgi_input: Any) -> dict[str, Any]:
    """The PEP 3333 environ of a Ring request (pure).

    :param req: the Ring request.
    :param wsgi_input: the file object for ``wsgi.input``.
    """
    headers: dict[str, str] = req["headers"]
    # PEP 3333: PATH_INFO is the decoded path, bytes carried as latin-1 code points
    path = urllib.parse.unquote_to_bytes(req["uri"]).decode("latin-1")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req["request_method"].upper(),
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": req["query_string"] or "",
        "SERVER_NAME": str(req["server_name"]),
        "SERVER_PORT": str(req["server_port"]),
        "SERVER_PROTOCOL": req["protocol"],
        "REMOTE_ADDR": req["remote_addr"],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": req["scheme"],
        "wsgi.input": wsgi_input,
        "wsgi.errors": _Errors(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        # the input ends where the body ends (chunked bodies have no CONTENT_LENGTH);
        # Werkzeug and gunicorn read to EOF when this is set
        "wsgi.input_terminated": True,
    }
    for name, value in headers.items():
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length":
            environ["CONTENT_LENGTH"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def _publish(state: dict[str, Any], stream: Stream, fire: Any, response: dict[str, Any]) -> None:
    """On the reactor thread: the response body stream exists; the head goes out."""
    state["stream"] = stream
    fire(response)


def _status_code(status: str) -> int:
    try:
        return int(status.split(" ", 1)[0])
    except (ValueError, AttributeError):
        raise ValueError(f"WSGI status must look like '200 OK', not {status!r}") from None


def wrap_wsgi(app: WSGIApp, reactor: Any = None) -> Callable[[dict[str, Any]], Deferred[dict[str, Any]]]:
    """A Ring handler running ``app`` in the reactor's thread pool.

    :param app: the WSGI application.
    :param reactor: the reactor (``None``: the global one, looked up per request).
    :returns: ``handler(req) -> Deferred[response]``.
    :raises TypeError: if ``app`` is not callable.
    """
    if not callable(app):
        raise TypeError(f"a WSGI app must be callable, not {app!r}")

    def handler(req: dict[str, Any]) -> Deferred[dict[str, Any]]:
        r = reactor
        if r is None:
            from twisted.internet import reactor as global_reactor

            r = global_reactor
        return _run(app, req, r)

    return handler


def _run(app: WSGIApp, req: dict[str, Any], reactor: Any) -> Deferred[dict[str, Any]]:
    state: dict[str, Any] = {"status": None, "headers": None, "sent": False, "stream": None}

    def cancel(_: object) -> None:
        # the client went away: a response body the app is still writing is dropped,
        # so its blocked put returns False and the worker thread ends
        stream = state["stream"]
        if stream is not None:
            stream._drop()

    d: Deferred[dict[str, Any]] = Deferred(cancel)
    watch_shutdown(reactor)
    body = req["body"]
    wsgi_input = byte_streams.to_input_stream(body if body is not None else b"", reactor=reactor)
    environ = build_environ(req, wsgi_input)

    def fire(response: dict[str, Any]) -> None:
        if not d.called:
            d.callback(response)
        elif isinstance(response["body"], Stream):
            response["body"]._drop()  # cancelled meanwhile: nobody will take

    def fail(exc: BaseException) -> None:
        if not d.called:
            d.errback(exc)

    def headers_dict(pairs: list[tuple[str, str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in pairs:
            old = out.get(name)
            if old is None:
                out[name] = value
            elif isinstance(old, list):
                old.append(value)
            else:
                out[name] = [old, value]
        return out

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            if state["sent"]:
                raise exc_info[1].with_traceback(exc_info[2])
        elif state["status"] is not None:
            raise AssertionError("start_response called twice without exc_info")
        state["status"] = _status_code(status)
        state["headers"] = headers_dict(list(headers))
        return write

    def send_head() -> Stream:
        # called in the worker thread, before the first chunk
        stream = Stream()
        state["sent"] = True
        response = {"status": state["status"], "headers": state["headers"], "body": stream}
        call_on_reactor(reactor, _publish, state, stream, fire, response)
        return stream

    def write(chunk: bytes) -> None:
        if state["status"] is None:
            raise AssertionError("write() before start_response()")
        if not chunk:
            return
        stream = state["stream"] or send_head()
        if not call_on_reactor(reactor, stream.put, bytes(chunk)):
            raise ConnectionError("the client went away")

    def work() -> None:
        result: Any = None
        try:
            result = app(environ, start_response)
            if isinstance(result, (list, tuple)) and state["stream"] is None:
                whole = b"".join(bytes(c) for c in result)
                if state["status"] is None:
                    raise AssertionError("the WSGI app returned without calling start_response")
                reactor.callFromThread(
                    fire, {"status": state["status"], "headers": state["headers"], "body": whole}
                )
                return
            for chunk in result:
                if chunk:
                    write(chunk)
            if state["status"] is None:
                raise AssertionError("the WSGI app returned without calling start_response")
            if state["stream"] is None:
                reactor.callFromThread(
                    fire, {"status": state["status"], "headers": state["headers"], "body": b""}
                )
        except (ConnectionError, ConnectionLostError):  # the client, or the server, is gone
            pass
        except BaseException as e:
            stream = state["stream"]
            if stream is None:
                exc = e.with_traceback(sys.exc_info()[2])
                reactor.callFromThread(fail, exc)
            else:
                _log.failure("WSGI application failed mid-body")
                reactor.callFromThread(stream.put, _BodyFailed())
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.failure("closing the WSGI result failed")
            stream = state["stream"]
            if stream is not None:
                reactor.callFromThread(stream.close)

    reactor.getThreadPool().callInThread(work)
    return d
