"""Linux software RAID as ``/proc/mdstat`` describes it (the server profile's RAID check).

An array is degraded when fewer members are up than it has slots (``[2/1] [U_]``),
or when it is inactive; a resync or rebuild reports its progress. Standard
library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class MdArray:
    """One md array of ``/proc/mdstat``.

    Attributes:
        name: ``md0``, ``md127``...
        active: ``False`` for an inactive (not started) array.
        level: ``raid1``, ``raid5``... (``None`` when inactive).
        slots: Members the array should have (``[2/1]``: 2), if it has redundancy.
        up: Members working (``[2/1]``: 1).
        members_map: ``UU_``: which slots work.
        failed: Members marked ``(F)``.
        sync_action: ``resync``, ``recovery``, ``check``, ``reshape`` or ``repair`` while running.
        sync_percent: Its progress.
        container: An Intel RST (imsm) or DDF container: always inactive, holding member arrays.
    """

    name: str
    active: bool
    level: str | None = None
    slots: int | None = None
    up: int | None = None
    members_map: str | None = None
    failed: int = 0
    sync_action: str | None = None
    sync_percent: float | None = None
    container: bool = False

    @property
    def degraded(self) -> bool:
        """Inactive (but not a container), or fewer members working than slots."""
        if not self.active:
            return not self.container
        if self.slots is not None and self.up is not None and self.up < self.slots:
            return True
        return self.members_map is not None and "_" in self.members_map


_MD_HEAD: Final = re.compile(
    r"^(md[0-9a-z_]+)\s*:\s*(active|inactive)(?:\s+\((?:auto-)?read-only\))?(.*)$"
)
_MD_STATUS: Final = re.compile(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]")
_MD_SYNC: Final = re.compile(r"\b(resync|recovery|check|reshape|repair)\s*=\s*([0-9.]+)%")
_MD_LEVEL: Final = re.compile(r"^(raid\d+|linear|multipath|faulty)$")
#: ``super external:imsm`` (a container), not ``super external:/md127/0`` (an array in one).
_MD_CONTAINER: Final = re.compile(r"\bsuper external:(?!/)")


def parse_mdstat(text: str) -> list[MdArray]:
    """The arrays of a ``/proc/mdstat`` text, in its order."""
    arrays: list[MdArray] = []
    current: dict[str, Any] | None = None

    def finish() -> None:
        if current is not None:
            arrays.append(MdArray(**current))

    for line in text.splitlines():
        head = _MD_HEAD.match(line)
        if head:
            finish()
            name, state, rest = head.groups()
            words = rest.split()
            level = words[0] if words and _MD_LEVEL.match(words[0]) else None
            current = {
                "name": name,
                "active": state == "active",
                "level": level,
                "failed": sum(1 for w in words if w.endswith("(F)")),
            }
            # Some tools (and old kernels' long lines) put the status on the same line.
        elif current is None or not line.startswith((" ", "\t")):
            if line.strip():
                finish()
                current = None
            continue
        if _MD_CONTAINER.search(line):
            current["container"] = True
        if status := _MD_STATUS.search(line):
            current["slots"], current["up"] = int(status[1]), int(status[2])
            current["members_map"] = status[3]
        if sync := _MD_SYNC.search(line):
            current["sync_action"], current["sync_percent"] = sync[1], float(sync[2])
    finish()
    return arrays
