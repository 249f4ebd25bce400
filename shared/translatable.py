"""``N_``: marks a text for a gettext catalog where it is written.

The text stays as written (English) and is translated where it is shown, in the
reader's language: the console's catalog (``messages``: ``make translations`` extracts
the marked texts of the files ``server/web/babel.cfg`` names) or the command line's
(``cli``, ``shared/babel.cfg``). Standard library only, so that the agent, the
operator's client and :mod:`server.kpi.report` can mark their texts too.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """``message`` unchanged: marked for the catalogs, translated where it is shown."""
    return message
