"""``styleforge explore`` on the command line: a real server process, and clean errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

from click.testing import CliRunner

from styleforge.cli.explore import is_loopback
from styleforge.cli.main import cli
from tests.explore.conftest import require


def test_command_serves_the_page_on_the_port_it_prints():
    require("uvicorn")
    require("starlette")
    proc = subprocess.Popen(
        [sys.executable, "-m", "styleforge.cli.main", "explore", "--network", "builtin:emoji", "--port", "0",
         "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url, lines, deadline = None, [], time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"styleforge explore" in r.read()
        with urllib.request.urlopen(url + "static/explore.js", timeout=10) as r:
            assert b"WebSocket" in r.read()
    finally:
        proc.terminate()
        proc.wait(20)


def test_clean_errors(tmp_path):
    result = CliRunner().invoke(cli, ["explore", "--network", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "does not exist" in result.output and "Traceback" not in result.output
    bad = tmp_path / "dirs.npz"
    bad.write_bytes(b"not a zip")
    result = CliRunner().invoke(cli, ["explore", "--network", "builtin:emoji", "--directions", str(bad)])
    assert result.exit_code != 0 and "not a readable .npz" in result.output


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
