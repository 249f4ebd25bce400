"""``fieldlink server init-config``: a commented server.toml that names every key and loads."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.cli.server import server_app
from server.config import ServerSettings
from server.config_file import load_settings
from server.config_sample import render_sample
from server.kpi.config import KpiSettings
from server.mail import SmtpSettings
from server.surveys.config import SurveySettings


def _keys_in(text: str) -> set[str]:
    return set(re.findall(r"^#?\s?([a-z_0-9]+) = ", text, flags=re.MULTILINE))


def test_the_sample_names_every_server_key() -> None:
    keys = _keys_in(render_sample())
    missing = set(ServerSettings.model_fields) - {"kpi", "survey", "smtp", "notify"} - keys
    assert not missing, f"server.sample.toml lacks {sorted(missing)}"
    assert set(SmtpSettings.model_fields) <= keys
    text = render_sample()
    assert "\n[server.smtp]\n" in text
    assert "\n# [[server.notify]]\n" in text
    kpi_keys = set(KpiSettings.model_fields) - {"dispatch_cost", "baseline_ttr_fallback_hours"}
    assert kpi_keys <= keys
    assert set(SurveySettings.model_fields) <= keys


def test_the_sample_names_no_key_the_server_does_not_have() -> None:
    names = set(ServerSettings.model_fields) | set(KpiSettings.model_fields)
    names |= set(SurveySettings.model_fields) | set(SmtpSettings.model_fields)
    names |= {"mfp", "imaging", "server"}  # the per-type tables
    assert _keys_in(render_sample()) - names == set()


#: Commented keys that show an example value rather than the default.
EXAMPLES = {"broker_ca", "broker_cert", "broker_key", "broker_username", "broker_password",
            "device_broker_url", "instance_id", "tunnel_url", "ssh_gateway_host",
            "recordings_dir", "thresholds", "access_log_file", "metrics_token",
            "forwarded_allow_ips", "phone_default_region", "mfa_required_roles",
            "mfa_key_file", "key_file", "host", "ca_file", "username", "password_file"}  # fmt: skip


def test_the_commented_values_are_the_defaults(tmp_path: Path) -> None:
    # Uncommenting a line gives a valid file, and the value it shows is the real default.
    text = re.sub(r"^# ([a-z_0-9]+ = |  \{|\])", r"\1", render_sample(), flags=re.MULTILINE)
    path = tmp_path / "server.toml"
    path.write_text(text)
    settings = load_settings(ServerSettings, path, "server")
    defaults = ServerSettings(database_url=settings.database_url)
    commented = set(re.findall(r"^# ([a-z_0-9]+) = ", render_sample(), flags=re.MULTILINE))
    survey_keys = set(SurveySettings.model_fields)
    smtp_keys = set(SmtpSettings.model_fields)
    for key in (
        commented
        - EXAMPLES
        - set(KpiSettings.model_fields)
        - smtp_keys
        - {"mfp", "imaging", "server"}
    ):
        if key in survey_keys:
            assert getattr(settings.survey, key) == getattr(defaults.survey, key), key
        else:
            assert getattr(settings, key) == getattr(defaults, key), key
    for key in (commented & smtp_keys) - EXAMPLES:
        assert getattr(settings.smtp, key) == getattr(SmtpSettings(), key), key
    assert settings.notify == []
    assert settings.kpi == KpiSettings()
    assert [t.metric for t in settings.thresholds] == ["disk_percent:*", "mem_percent"]


def test_init_config_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "etc" / "server.toml"
    runner = CliRunner()
    args = ["init-config", "--out", str(out), "--database-url", "sqlite:////srv/f.db",
            "--public-url", "https://center.example"]  # fmt: skip
    result = runner.invoke(server_app, args)
    assert result.exit_code == 0, result.output
    assert f"fieldlink ca init --config {out}" in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    settings = load_settings(ServerSettings, out, "server")
    assert settings.public_url == "https://center.example"
    assert settings.database_url == "sqlite:////srv/f.db"

    out.write_text("# edited by the site\n")
    again = runner.invoke(server_app, args)
    assert again.exit_code != 0
    assert out.read_text() == "# edited by the site\n"


@pytest.mark.parametrize("value", ['x" \nevil = "1', "a\nb"])
def test_init_config_refuses_values_that_would_break_the_file(value: str) -> None:
    result = CliRunner().invoke(server_app, ["init-config", "--out", "-", "--public-url", value])
    assert result.exit_code != 0
