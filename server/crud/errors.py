"""The error of a value a user gave: :class:`shared.errors.InvalidInput`, under its server name.

It lives in :mod:`shared.errors` so that the commands that also run over the
API (``fieldlink kpi``, ``fieldlink incident export``) raise it where only
``fieldlink[client]`` is installed.
"""

from __future__ import annotations

from shared.errors import InvalidInput as InvalidInput
