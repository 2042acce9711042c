"""Shared test configuration.

- Hypothesis: on CI (``CI`` set) its built-in ``ci`` profile is used (derandomised, no
  deadline); locally the ``dev`` profile drops the per-example deadline too, because
  2 shared cores make wall-clock deadlines flaky. ``HYPOTHESIS_PROFILE`` overrides.
- Per-test time limit (``timeout`` in setup.cfg, pytest-timeout): its ``signal``
  method cannot interrupt a test waiting on the reactor under pytest-twisted (the
  alarm lands in the reactor loop, and every later test fails with "reactor has
  stopped"), so ``timeout_method = thread`` is used: a test over the limit ends the
  run with every thread's stack. :class:`_NameTheHungTest` first prints which test it
  was, since the main thread's stack is only the reactor loop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from aleph_tx.http import ConnectionPool, connection_pool

settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


class _NameTheHungTest:
    """pytest-timeout's thread timer, preceded by the name of the test that ran over."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        if settings.method != "thread" or not settings.timeout:
            return None  # pytest-timeout's own handling

        import pytest_timeout  # type: ignore[import-untyped]

        def expire() -> None:
            capman = item.config.pluginmanager.getplugin("capturemanager")
            if capman is not None:
                capman.suspend_global_capture(item)
            item.config.get_terminal_writer().sep("+", f"Timeout (>{settings.timeout:g}s): {item.nodeid}")
            pytest_timeout.timeout_timer(item, settings)  # dumps the stacks, then os._exit(1)

        timer = threading.Timer(settings.timeout, expire)
        timer.name = f"timeout {item.nodeid}"
        timer.daemon = True
        item.cancel_timeout = timer.cancel  # type: ignore[attr-defined]  # pytest-timeout's protocol
        timer.start()
        return True


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(_NameTheHungTest(), "aleph_tx_name_the_hung_test")


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    """A client connection pool of its own, checked for leaks at the end of the test:
    every request done, nothing left checked out or waiting."""
    p = connection_pool()
    yield p
    desc = p.description()
    assert desc["active"] == 0, desc
    assert desc["waiters"] == 0, desc
    p.close()


@pytest.fixture(scope="session")
def tls_options() -> Any:
    """A self-signed server context (``tls.self_signed_context``), made once per run."""
    from aleph_tx import tls

    return tls.self_signed_context()


@pytest.fixture
def h3_serve(tls_options: Any) -> Iterator[Any]:
    """``h3_serve(handler, **limits)`` starts an HTTP/3 server on 127.0.0.1 (closed at
    the end); the tests that use it skip without aioquic."""
    from test_http_h3_server import serving

    yield from serving(tls_options)


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """Servers a test starts (anything with ``close()``), closed at its end."""
    started: list[Any] = []
    yield started
    for srv in started:
        srv.close()
