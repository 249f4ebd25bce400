"""The generated Mosquitto configuration and the provisioning commands.

The part of tests/unit/provisioning/test_broker_config.py that leaves the test's process
(it signals a real process); the in-process rest stays there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioning.broker import (
    BrokerTargets,
    publish_revocations,
    write_broker_config,
)
from provisioning.ca import CertificateAuthority
from shared.errors import UnavailableError


def test_publish_revocations_signals_by_pid_file_or_command(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "state")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{sleeper.pid}\n")
        write_broker_config(ca, tmp_path / "broker", pid_file=pid_file)
        assert publish_revocations(ca) is True
        assert sleeper.wait(timeout=5) == -1  # SIGHUP ends `sleep`: the signal was sent
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    with pytest.raises(UnavailableError, match="not running"):
        publish_revocations(ca)
    marker = tmp_path / "reloaded"
    write_broker_config(ca, tmp_path / "broker", reload_command=f"touch {marker}")
    targets = BrokerTargets.load(ca.paths.broker_targets)
    targets.pid_file = None
    targets.save(ca.paths.broker_targets)
    assert publish_revocations(ca) is True
    assert marker.exists()
