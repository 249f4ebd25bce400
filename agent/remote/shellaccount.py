"""Who the shell helper starts shells as: the maintenance account from root's configuration.

The helper trusts ``[agent.policy] shell_user`` and ``shell`` from the agent's
configuration only when root alone can change the file (:func:`check_config_file`);
the account is looked up in the password database and is never root
(:class:`ShellAccount`). Standard library only.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass
from pathlib import Path

from agent.remote.policy import SitePolicy
from shared.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ShellAccount:
    """The maintenance account shells run as, from the password database."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def lookup(cls, name: str) -> ShellAccount:
        """The account ``name``; never root (give the account sudo instead).

        Raises:
            ConfigError: no such account, or it is root.
        """
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            msg = f"[agent.policy] shell_user: no account {name!r} (useradd --create-home {name})"
            raise ConfigError(msg) from None
        if entry.pw_uid == 0:
            msg = f"[agent.policy] shell_user {name!r} is root: use an account with sudo rights"
            raise ConfigError(msg)
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            home=entry.pw_dir or "/",
            shell=entry.pw_shell or "/bin/sh",
        )


def check_config_file(path: Path) -> None:
    """Refuse a configuration the agent (or anyone but root) could change.

    The helper trusts ``shell_user`` and ``shell`` from it: a file writable by
    the agent's account would let a compromised agent choose the account.

    Raises:
        ConfigError: it is not root's, or others may write it.
    """
    try:
        info = path.stat()
    except OSError as exc:
        msg = f"cannot read the helper's configuration {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    if info.st_uid != 0 or info.st_mode & 0o022:
        msg = (
            f"{path} must belong to root and be writable by root only: the shell helper "
            "takes the shell account from it"
        )
        raise ConfigError(msg)


def read_policy(path: Path) -> SitePolicy:
    """``[agent.services]`` and ``[agent.policy]`` of ``path``, checked.

    Raises:
        ConfigError: the file is unreadable, not TOML, or the tables are malformed.
    """
    import tomllib

    try:
        with path.open("rb") as source:
            document = tomllib.load(source)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise ConfigError(msg) from exc
    agent = document.get("agent", {})
    tables = (
        (agent, agent.get("services", {}), agent.get("policy", {}))
        if isinstance(agent, dict)
        else (None,)
    )
    if not all(isinstance(table, dict) for table in tables):
        msg = f"{path}: [agent], [agent.services] and [agent.policy] must be tables"
        raise ConfigError(msg)
    return SitePolicy.from_config(agent.get("services"), agent.get("policy"))
