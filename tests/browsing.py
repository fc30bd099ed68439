"""Browser fixtures (a pytest plugin, loaded by conftest): Debian's chromium driven by
Playwright, the shim in database mode on a real socket, and screenshots that outlive the run.

Chromium is installed by ``scripts/ensure-chromium`` when missing; if it still cannot be
found the test fails: a browser test that skips proves nothing.

Every screenshot goes to the test's ``tmp_path`` and is copied to ``SCREENSHOTS``
(``test-output/screenshots/`` at the top of the checkout, ignored by git), one stable name
per picture, so the pictures exist after the suite wherever pytest kept its tmp dirs.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from processes import default_sigint

from shim.app import create_app
from shim.serving import LocalServer

ROOT = Path(__file__).resolve().parent.parent
ENSURE_CHROMIUM = ROOT / "scripts" / "ensure-chromium"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Flags that work on this kind of machine: without the background-networking ones chromium
# keeps dialling Google's hosts through a closed network. Playwright adds --headless and a
# fresh --user-data-dir per launch itself.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Return the path of Debian's chromium, installing it first when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        subprocess.run([str(ENSURE_CHROMIUM)], check=False, timeout=900,
                       stdout=subprocess.DEVNULL, preexec_fn=default_sigint)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed and scripts/ensure-chromium could "
                    "not install it")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path) -> Iterator[Browser]:
    """One headless chromium for the run; each test opens its own context."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                              args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class LateApp:
    """A WSGI app picked after its socket is bound: its settings need its own address."""

    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


@pytest.fixture
def open_shim(db_settings, db_store) -> Iterator[Callable[..., str]]:
    """Return ``open_shim(**overrides)``: start the shim in database mode on a real socket,
    with ``db_settings`` changed by ``overrides`` and ``public_url`` set to its address, and
    return that address (stopped at the end of the test)."""
    with contextlib.ExitStack() as servers:
        def start(**overrides) -> str:
            slot = LateApp()
            server = servers.enter_context(LocalServer(slot))
            slot.app = create_app(replace(db_settings, public_url=server.base_url, **overrides),
                                  store=db_store)
            return server.base_url

        yield start


@pytest.fixture
def shim_url(open_shim) -> str:
    """The address of the shim in database mode on a real socket (``open_shim()``)."""
    return open_shim()


@pytest.fixture(scope="session")
def operator(operator_token) -> dict[str, str]:
    """The operator's HTTP Basic credentials, as a browser sends them."""
    return {"username": "operator", "password": operator_token}


@pytest.fixture
def screenshot(tmp_path) -> Callable[..., Path]:
    """Return ``screenshot(page, name, full_page=True)``: save the page (whole, or what the
    window shows) as ``name``.png in the test's tmp dir and in ``SCREENSHOTS``; return the
    tmp dir's copy, checked to be a real PNG."""
    def take(page: Page, name: str, *, full_page: bool = True) -> Path:
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=full_page)
        assert shot.stat().st_size > 1000
        assert shot.read_bytes().startswith(PNG_SIGNATURE)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / shot.name)
        return shot

    return take
