"""``N_``: marks a text for the console's gettext catalog (``messages``) where it is written.

The text stays as written (English) and is translated where it is shown, in the
reader's language. ``make translations`` extracts the marked texts of the files
``server/web/babel.cfg`` names. Standard library only, so that modules the operator's
client imports (:mod:`server.kpi.report`) can mark their texts too.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """``message`` unchanged: marked for the catalogs, translated where it is shown."""
    return message
