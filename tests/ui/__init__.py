"""Browser tests of the web UI: a real server, a real headless Chromium, selected by the UI contract."""
