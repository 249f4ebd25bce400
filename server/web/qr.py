"""QR codes drawn on the server, as inline SVG: the console's enrolment page shows one.

No script library and no request anywhere else: :mod:`segno` encodes the text and
this module draws its modules as one SVG path in the page (an authenticator app
scans the ``otpauth://`` URI from it), so the secret never leaves the server's
answer to the user who asked for it.
"""

from __future__ import annotations

import segno
from markupsafe import Markup

#: Error correction: M (15 %) holds a phone's scan of a screen well at these sizes.
ERROR_LEVEL = "m"
#: The quiet zone around the code, in modules (the standard's four).
BORDER = 4
#: Pixels per module: an ``otpauth://`` URI (version 6 to 8) comes out 200 to 240 px wide.
SCALE = 4


def qr_svg(text: str, *, label: str) -> Markup:
    """``text`` as a QR code: an inline ``<svg role="img">`` named ``label`` (escaped).

    Each run of dark modules in a row is one rectangle ``M{x} {y}h{n}v1h-{n}z`` of the
    path, in modules (the quiet zone included); nothing but the path and its white
    background is drawn.
    """
    code = segno.make(text, error=ERROR_LEVEL, micro=False)
    runs: list[str] = []
    size = 0
    for y, row in enumerate(code.matrix_iter(scale=1, border=BORDER)):
        modules = list(row)
        size = len(modules)
        x = 0
        while x < size:
            if not modules[x]:
                x += 1
                continue
            start = x
            while x < size and modules[x]:
                x += 1
            runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" '
        'viewBox="0 0 {size} {size}" width="{px}" height="{px}" shape-rendering="crispEdges">'
        '<rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{path}"/></svg>'
    ).format(label=label, size=size, px=size * SCALE, path="".join(runs))
