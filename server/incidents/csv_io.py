"""CSV import and export of incidents, in docs/kpis.md's columns.

The import checks every row before it writes anything: one bad row and
nothing is imported, and the error lists every bad row by its line in the
file (the header is line 1). It is idempotent on ``external_id``: a row whose
``external_id`` is known updates that incident, or is skipped when nothing
changed. Rows go in with one multi-row ``INSERT`` per batch. The file is read
as a stream (a text file object), never as one string; a NUL byte or bytes
that are not UTF-8 are refused with the line they are on.

The export neutralizes spreadsheet formulas (CSV injection, OWASP): a text
cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
is written with a leading ``'``, which spreadsheets show as text and do not
evaluate. So that the mark is never ambiguous, a text cell that begins with
``'`` gets one more. The import removes exactly that one mark (a cell that
begins with ``'`` followed by one of those characters or another ``'``), so a
file exported by fieldlink imports back to the very same values.

``handover_note`` (the latest escalation's note) goes out and comes back like
the other text cells; a file without that column leaves the stored notes as
they are (an older export must not wipe what the specialists were told).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.engine import Connection
from sqlmodel import Session

from server.crud import InvalidInput
from server.crud.conflicts import conflict_on_duplicate
from server.incidents.records import check_incident
from server.kpi.compute import DEVICE_TABLE, INCIDENT_TABLE
from server.models import IncidentCreate
from server.models.incident import CSV_COLUMNS, HANDOVER_NOTE_MAX, TIME_FIELDS
from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: Columns a file must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("device_id", "opened_at")
#: Columns the import writes (``id`` is the server's and is ignored on import).
_IMPORTED: tuple[str, ...] = tuple(c for c in CSV_COLUMNS if c != "id")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
_CHUNK = 500
_INSERT_BATCH = 5000
_MAX_REASONS_IN_MESSAGE = 20
#: What a spreadsheet may take as the start of a formula (OWASP, CSV injection).
FORMULA_STARTS: Final = frozenset("=+-@\t\r")
#: The mark that makes a spreadsheet show a cell as text.
TEXT_MARK: Final = "'"
_MARKED: Final = FORMULA_STARTS | {TEXT_MARK}


def neutralize(value: str) -> str:
    """A text cell as the export writes it: formula starts (and a leading ``'``) marked."""
    return TEXT_MARK + value if value[:1] in _MARKED else value


def unneutralize(value: str) -> str:
    """The cell's value as it was before :func:`neutralize` (other cells are unchanged)."""
    if value[:1] == TEXT_MARK and value[1:2] in _MARKED and len(value) > 1:
        return value[1:]
    return value


@dataclass(frozen=True)
class RowProblem:
    """Why one line of an imported file is refused (``field`` when one is to blame)."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", {self.field}" if self.field else "")
        return f"{where}: {self.message}"


class CsvImportInvalid(InvalidInput):
    """The file has bad rows; nothing was imported. ``problems`` lists every one."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        shown = "; ".join(str(p) for p in problems[:_MAX_REASONS_IN_MESSAGE])
        more = len(problems) - _MAX_REASONS_IN_MESSAGE
        lines = len({p.line for p in problems})
        message = f"{lines} bad row(s), nothing imported: {shown}"
        if more > 0:
            message += f"; and {more} more"
        super().__init__(message)
        self.problems = list(problems)


class ImportReport(BaseModel):
    """What an import did: rows inserted, updated (known ``external_id``), or left as they were."""

    rows: int
    inserted: int
    updated: int
    skipped: int


def _parse_bool(value: str) -> bool | str:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return value


class _BadText(ValueError):
    """The file is not UTF-8 text, or holds a NUL byte (``line`` says where)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def decode_lines(data: IO[bytes]) -> Iterator[str]:
    """A binary file's lines as UTF-8 text (a leading BOM dropped), read as they come.

    Raises:
        _BadText: on the first line that is not UTF-8, naming it.
    """
    for number, raw in enumerate(data, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadText(number, "the file is not UTF-8 text") from exc
        yield text.removeprefix("\ufeff") if number == 1 else text


def _records(source: str | Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Each record with the line it starts on (a quoted field may span lines).

    Raises:
        _BadText: bytes that are not UTF-8, or a NUL byte.
    """
    stream = io.StringIO(source, newline="") if isinstance(source, str) else source
    reader = csv.reader(stream)
    line = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        if any("\x00" in field for field in record):
            raise _BadText(line, "a NUL byte: the file is not CSV text")
        yield line, record
        line = reader.line_num + 1


class _CsvRow(IncidentCreate):
    """One row of an import: an incident, and the latest escalation's handover note."""

    handover_note: str | None = Field(default=None, max_length=HANDOVER_NOTE_MAX)


def _problems_of(error: ValidationError, line: int) -> list[RowProblem]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        field = str(item["loc"][0]) if item["loc"] else None
        problems.append(RowProblem(line, field, item["msg"]))
    return problems


def _parse(
    source: str | Iterable[str],
) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    """Every row as checked values with its line, and every problem found."""
    records = _records(source)
    problems: list[RowProblem] = []
    try:
        _, header = next(records)
    except StopIteration:
        return [], [RowProblem(1, None, "the file is empty: it needs a header row")]
    except csv.Error as exc:
        return [], [RowProblem(1, None, f"not CSV: {exc}")]
    except _BadText as exc:
        return [], [RowProblem(exc.line, None, str(exc))]
    columns = [name.strip().lower() for name in header]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        problems.append(
            RowProblem(
                1, None, f"unknown column(s) {', '.join(unknown)}: use {', '.join(CSV_COLUMNS)}"
            )
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        problems.append(RowProblem(1, None, f"missing column(s) {', '.join(missing)}"))
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        problems.append(RowProblem(1, None, f"repeated column(s) {', '.join(repeated)}"))
    if problems:
        return [], problems
    rows: list[tuple[int, dict[str, Any]]] = []
    first_line_of: dict[str, int] = {}
    line = 1
    try:
        for line, record in records:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if len(record) != len(columns):
                problems.append(
                    RowProblem(
                        line, None, f"{len(record)} fields where the header has {len(columns)}"
                    )
                )
                continue
            raw = {
                name: unneutralize(value.strip())
                for name, value in zip(columns, record, strict=True)
                if name != "id"
            }
            values: dict[str, Any] = {k: v for k, v in raw.items() if v != ""}
            if "remote_session_used" in raw:
                values["remote_session_used"] = _parse_bool(raw["remote_session_used"])
            try:
                checked = _CsvRow.model_validate(values).model_dump()
            except ValidationError as exc:
                problems.extend(_problems_of(exc, line))
                continue
            checked["down_at"] = checked["down_at"] or checked["opened_at"]
            if "handover_note" not in columns:
                del checked["handover_note"]  # kept as stored (see the module's docstring)
            problems.extend(RowProblem(line, p.field, p.message) for p in check_incident(checked))
            external_id = checked["external_id"]
            if external_id is not None:
                if external_id in first_line_of:
                    problems.append(
                        RowProblem(
                            line,
                            "external_id",
                            f"{external_id!r} is also on line {first_line_of[external_id]}",
                        )
                    )
                else:
                    first_line_of[external_id] = line
            rows.append((line, checked))
    except csv.Error as exc:
        problems.append(RowProblem(line, None, f"not CSV: {exc}"))
    except _BadText as exc:
        # Nothing after this point can be read: the file is refused as it is.
        return [], [*problems, RowProblem(exc.line, None, str(exc))]
    return rows, problems


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _device_types(connection: Connection, device_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(device_ids))
    found: dict[str, str] = {}
    device = DEVICE_TABLE.c
    for chunk in _chunks(ids):
        query = sa.select(device.id, device.type).where(device.id.in_(chunk))
        found.update({row.id: row.type for row in connection.execute(query)})
    return found


def _known(connection: Connection, external_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    incident = INCIDENT_TABLE.c
    columns = [incident.id, *(incident[name] for name in _IMPORTED), incident.device_type]
    known: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(external_ids):
        query = sa.select(*columns).where(incident.external_id.in_(chunk))
        for row in connection.execute(query).mappings():
            known[row["external_id"]] = dict(row)
    return known


def _linked(connection: Connection, incident_ids: Sequence[int]) -> set[int]:
    from server.models import IncidentSession

    link = IncidentSession.__table__.c  # type: ignore[attr-defined]
    linked: set[int] = set()
    for chunk in _chunks(incident_ids):
        query = sa.select(link.incident_id).where(link.incident_id.in_(chunk)).distinct()
        linked.update(connection.execute(query).scalars())
    return linked


def import_incidents_csv(session: Session, text: str | Iterable[str]) -> ImportReport:
    """Import a CSV file of incidents, all or nothing (commits on success).

    ``text`` is the file's text, or its lines read as they come (:func:`decode_lines`).

    Raises:
        CsvImportInvalid: listing every bad row; nothing was written.
        Conflict: when another import wrote the same ``external_id`` meanwhile.
    """
    rows, problems = _parse(text)
    connection = session.connection()
    types = _device_types(connection, (values["device_id"] for _, values in rows))
    for line, values in rows:
        if values["device_id"] not in types:
            problems.append(RowProblem(line, "device_id", f"no device {values['device_id']!r}"))
    if problems:
        problems.sort(key=lambda p: p.line)
        raise CsvImportInvalid(problems)

    known = _known(connection, [v["external_id"] for _, v in rows if v["external_id"]])
    linked = _linked(connection, [k["id"] for k in known.values()])
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    skipped = 0
    for _, values in rows:
        values["device_type"] = types[values["device_id"]]
        existing = known.get(values["external_id"]) if values["external_id"] else None
        if existing is None:
            inserts.append({**values, "created_at": now, "updated_at": now})
            continue
        values.setdefault("handover_note", existing["handover_note"])
        if existing["id"] in linked:
            values["remote_session_used"] = True
        if all(existing[name] == values[name] for name in (*_IMPORTED, "device_type")):
            skipped += 1
            continue
        updates.append({**{f"v_{k}": v for k, v in values.items()}, "v_updated_at": now})
    retry = "another import wrote some of these external_ids meanwhile: retry"
    with conflict_on_duplicate(session, retry):
        for batch in _chunks(inserts, _INSERT_BATCH):
            session.execute(sa.insert(INCIDENT_TABLE), list(batch))
        if updates:
            incident = INCIDENT_TABLE.c
            statement = (
                sa.update(INCIDENT_TABLE)
                .where(incident.external_id == sa.bindparam("v_external_id"))
                .values(
                    {
                        name: sa.bindparam(f"v_{name}")
                        for name in (*_IMPORTED, "device_type", "updated_at")
                        if name != "external_id"
                    }
                )
            )
            for batch in _chunks(updates, _INSERT_BATCH):
                session.execute(statement, list(batch))
        session.commit()
    report = ImportReport(
        rows=len(rows), inserted=len(inserts), updated=len(updates), skipped=skipped
    )
    logger.info(
        "incident import: %d rows, %d inserted, %d updated, %d skipped",
        report.rows,
        report.inserted,
        report.updated,
        report.skipped,
    )
    return report


def format_time(value: datetime | None) -> str:
    """A timestamp as the CSV writes it: ISO 8601 in UTC with ``Z``."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in TIME_FIELDS:
        return format_time(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return neutralize(value)
    return str(value)


def export_incidents_csv(
    connection: Connection, where: sa.ColumnElement[bool], *, batch: int = 2000
) -> Iterator[str]:
    """The matching incidents as CSV text, header first, in chunks (oldest first)."""
    incident = INCIDENT_TABLE.c
    buffer = io.StringIO()
    # CRLF (RFC 4180): a carriage return inside a value is quoted, not a record break.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    query = (
        sa.select(*(incident[name] for name in CSV_COLUMNS))
        .where(where)
        .order_by(incident.opened_at, incident.id)
        .execution_options(yield_per=batch)
    )
    result = connection.execute(query)
    for partition in result.partitions():
        for row in partition:
            writer.writerow(
                [_cell(name, value) for name, value in zip(CSV_COLUMNS, row, strict=True)]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
