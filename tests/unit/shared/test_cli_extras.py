"""A command whose extra is missing names the extra that installs it."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from shared.cli import GROUP, _missing_extra


@pytest.mark.parametrize(
    ("name", "value", "extra"),
    [
        ("login", "server.client.account:login_command", "client"),
        ("ssh", "server.client.terminal:ssh_command", "client"),
        ("user", "server.cli.users:user_app", "server"),
        ("ca", "server.cli.pki:ca_app", "server"),
        ("agent", "agent.cli:agent_app", "agent"),
    ],
)
def test_the_missing_extra_is_named(
    name: str, value: str, extra: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entry_point = EntryPoint(name=name, value=value, group=GROUP)
    command = _missing_extra(name, entry_point, ImportError("gone", name="somepackage"))
    with pytest.raises(SystemExit) as exited:
        command.main(["--anything"], prog_name=f"fieldlink {name}")
    assert exited.value.code == 6  # shared.exit_codes.UNAVAILABLE
    assert capsys.readouterr().err == (
        f"error: 'fieldlink {name}' needs the {extra} extra (somepackage is not installed): "
        f"pip install 'fieldlink[{extra}]'\n"
    )
