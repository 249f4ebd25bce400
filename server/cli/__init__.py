"""The center's commands: they act on a server's database and keys with ``--config``.

One module per command group (``server``, ``user``, ``device``, ``ca`` and
``broker-config``, ``audit``, ``incident``, ``kpi``, ``demo``), each registered
as an entry point of ``fieldlink.commands``. The operator's commands over the
API live apart, in :mod:`server.client`, which needs none of the server's
dependencies.
"""

from server.cli.common import ConfigOption, config_hint, find_config, open_database

__all__ = ["ConfigOption", "config_hint", "find_config", "open_database"]
