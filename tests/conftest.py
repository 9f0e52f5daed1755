"""Shared fixtures: the models folder and the built site served on localhost."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slow test (run by default)")
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return ROOT / "models"


@pytest.fixture(scope="session")
def site(models_dir):
    """Build dist/ (reused when up to date) and serve it with COOP/COEP (one per session)."""
    sys.path.insert(0, str(ROOT))
    from tools import site as site_mod

    os.environ["PIXIMI_MODELS_DIR"] = str(models_dir)
    site_mod.build_site()
    srv, origin = site_mod.serve_background(0)
    site_mod.SERVER = srv
    yield origin
    srv.shutdown()
    srv.server_close()
