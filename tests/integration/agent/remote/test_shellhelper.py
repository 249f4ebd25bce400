"""The shell helper's request, the policy keys that configure it, and enrollment's rules.

The part of tests/unit/agent/remote/test_shellhelper.py that leaves the test's process
(it runs the real `fieldlink` command); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_enroll_over_plain_http_stops_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared", "agent", "enroll", "--server", "http://192.0.2.7:8000",
         "--token", "flk_x", "--dir", str(tmp_path / "etc")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "refusing to enroll over plain http" in done.stderr
    assert "--insecure-http" in done.stderr
    assert not (tmp_path / "etc").exists()


def test_enroll_for_an_account_that_does_not_exist_stops_before_anything(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared", "agent", "enroll", "--server", "http://127.0.0.1:9",
         "--token", "flk_x", "--dir", str(tmp_path / "etc"), "--user", "no-such-account-fl"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--user no-such-account-fl: no such account" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "etc").exists()
