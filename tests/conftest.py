def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slow test (run by default)")
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright")
