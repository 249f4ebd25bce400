"""CSV import of customers and of devices (a fleet that already exists elsewhere); customer export.

Like the incidents' import (:mod:`server.incidents.csv_io`): every row is
checked before anything is written, one bad row and nothing is imported, and
the error lists every bad row by its line (the header is line 1). Cells
marked as text by a spreadsheet-safe export (a leading ``'`` before a formula
start) are read back without the mark; the export marks them again.

Customers: one row per contact (or per site); rows with the same ``number``
make one customer, whose name, country and region the first row gives.
A customer already on record is left as it is (counted as skipped).

Devices: one row per device, naming its customer by ``customer_number`` (on
record already, or in the same import run before). Devices are registered
without an enrollment token (``fieldlink device token`` gives one later).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, select

from server import audit
from server.crud.customers import add_customer, customer_public
from server.crud.devices import add_device
from server.crud.errors import InvalidInput
from server.crud.phones import to_e164
from server.incidents.csv_io import (
    CsvImportInvalid,
    RowProblem,
    _BadText,
    _records,
    neutralize,
    unneutralize,
)
from server.models import ContactIn, Customer, CustomerCreate, Device, DeviceCreate, SiteIn
from server.scope import EVERYTHING, Scope
from shared.errors import InvalidDeviceId
from shared.ids import check_device_id, derive_device_id

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "number",
    "name",
    "country",
    "region",
    "contact_name",
    "contact_phone",
    "contact_email",
    "contact_language",
    "site",
    "site_country",
)
DEVICE_COLUMNS: tuple[str, ...] = (
    "id",
    "serial",
    "model",
    "type",
    "customer_number",
    "site",
    "region",
    "contact_phone",
)
#: The most rows one import takes (the byte limit comes first for ordinary files).
MAX_ROWS = 100_000


class CustomerImportReport(BaseModel):
    """What a customer import did."""

    rows: int
    inserted: int
    skipped: int


class DeviceImportReport(BaseModel):
    """What a device import did."""

    rows: int
    inserted: int


def _rows(
    source: str | Iterable[str], columns: tuple[str, ...], required: tuple[str, ...]
) -> tuple[list[tuple[int, dict[str, str]]], list[RowProblem]]:
    """Each data row (line, cells by column, marks removed) and every problem of the file."""
    records = _records(source)
    try:
        _, header = next(records)
    except StopIteration:
        return [], [RowProblem(1, None, "the file is empty: it needs a header row")]
    except (csv.Error, _BadText) as exc:
        return [], [RowProblem(getattr(exc, "line", 1), None, f"not CSV text: {exc}")]
    names = [name.strip().lower() for name in header]
    problems: list[RowProblem] = []
    unknown = [n for n in names if n not in columns]
    if unknown:
        problems.append(
            RowProblem(1, None, f"unknown column(s) {', '.join(unknown)}: use {', '.join(columns)}")
        )
    missing = [c for c in required if c not in names]
    if missing:
        problems.append(RowProblem(1, None, f"missing column(s) {', '.join(missing)}"))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(RowProblem(1, None, f"repeated column(s) {', '.join(repeated)}"))
    if problems:
        return [], problems
    rows: list[tuple[int, dict[str, str]]] = []
    line = 1
    try:
        for line, record in records:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if len(rows) >= MAX_ROWS:
                problems.append(RowProblem(line, None, f"more than {MAX_ROWS} rows: split it"))
                break
            if len(record) != len(names):
                problems.append(
                    RowProblem(
                        line, None, f"{len(record)} fields where the header has {len(names)}"
                    )
                )
                continue
            rows.append(
                (
                    line,
                    {
                        n: unneutralize(v.strip())
                        for n, v in zip(names, record, strict=True)
                        if v.strip()
                    },
                )
            )
    except csv.Error as exc:
        problems.append(RowProblem(line, None, f"not CSV: {exc}"))
    except _BadText as exc:
        return [], [*problems, RowProblem(exc.line, None, str(exc))]
    return rows, problems


def _problems_of(
    error: ValidationError | InvalidInput, line: int, prefix: str = ""
) -> list[RowProblem]:
    if isinstance(error, InvalidInput):
        field, _, message = str(error).partition(": ")
        return [RowProblem(line, field or None, message or str(error))]
    found = []
    for item in error.errors(include_url=False, include_input=False):
        loc = [str(part) for part in item["loc"]]
        found.append(RowProblem(line, prefix + (loc[-1] if loc else "") or None, item["msg"]))
    return found


def import_customers_csv(
    session: Session, source: str | Iterable[str], *, actor: str = audit.SYSTEM_ACTOR
) -> CustomerImportReport:
    """Import customers with their contacts and sites, all or nothing (commits on success).

    Raises:
        CsvImportInvalid: listing every bad row; nothing was written.
    """
    rows, problems = _rows(source, CUSTOMER_COLUMNS, ("number", "name"))
    customers: dict[str, dict[str, Any]] = {}
    for line, cells in rows:
        number = cells.get("number", "")
        entry = customers.setdefault(
            number,
            {
                "line": line,
                "number": number,
                "name": cells.get("name", ""),
                "country": cells.get("country"),
                "region": cells.get("region"),
                "contacts": [],
                "sites": [],
                "lines": [],
            },
        )
        for name in ("name", "country", "region"):
            if cells.get(name) and entry[name] and cells[name] != entry[name]:
                problems.append(
                    RowProblem(
                        line, name, f"differs from line {entry['line']} of customer {number}"
                    )
                )
        if cells.get("contact_name") or cells.get("contact_phone") or cells.get("contact_email"):
            contact = {
                "name": cells.get("contact_name", ""),
                "phone": cells.get("contact_phone"),
                "email": cells.get("contact_email"),
                "language": cells.get("contact_language"),
            }
            try:
                ContactIn.model_validate(contact)
            except ValidationError as exc:
                problems.extend(_problems_of(exc, line, "contact_"))
            entry["contacts"].append((line, contact))
        if cells.get("site"):
            site = {"name": cells["site"], "country": cells.get("site_country")}
            try:
                SiteIn.model_validate(site)
            except ValidationError as exc:
                problems.extend(_problems_of(exc, line, "site_"))
            entry["sites"].append(site)
        entry["lines"].append(line)
    known = (
        set(
            session.exec(
                select(Customer.number).where(col(Customer.number).in_(list(customers)))
            ).all()
        )
        if customers
        else set()
    )
    checked: list[CustomerCreate] = []
    for number, entry in customers.items():
        try:
            data = CustomerCreate.model_validate(
                {
                    "number": number,
                    "name": entry["name"],
                    "country": entry["country"],
                    "region": entry["region"],
                    "contacts": [c for _, c in entry["contacts"]],
                    "sites": entry["sites"],
                }
            )
        except ValidationError as exc:
            for item in exc.errors(include_url=False, include_input=False):
                loc = [str(p) for p in item["loc"]]
                if loc and loc[0] in ("contacts", "sites"):
                    continue  # reported on its own line above
                problems.append(RowProblem(entry["line"], loc[0] if loc else None, item["msg"]))
            continue
        region = data.country
        for line, contact in entry["contacts"]:
            if contact.get("phone"):
                if to_e164(contact["phone"], region) is None:
                    where = f" in {region}" if region else " (no country: write it as +CC...)"
                    problems.append(
                        RowProblem(line, "contact_phone", f"not a valid phone number{where}")
                    )
        if len({s.name for s in data.sites}) != len(data.sites):
            problems.append(RowProblem(entry["line"], "site", "a site name appears twice"))
        if number not in known:
            checked.append(data)
    if problems:
        raise CsvImportInvalid(sorted(problems, key=lambda p: p.line))
    for data in checked:
        add_customer(session, data=data, actor=actor)
    session.commit()
    return CustomerImportReport(
        rows=len(rows), inserted=len(checked), skipped=len(customers) - len(checked)
    )


def import_devices_csv(
    session: Session, source: str | Iterable[str], *, actor: str = audit.SYSTEM_ACTOR
) -> DeviceImportReport:
    """Register devices of known customers, all or nothing (commits on success).

    Raises:
        CsvImportInvalid: listing every bad row; nothing was written.
    """
    rows, problems = _rows(source, DEVICE_COLUMNS, ("serial", "model", "type", "customer_number"))
    seen: dict[str, int] = {}
    checked: list[tuple[int, DeviceCreate]] = []
    for line, cells in rows:
        try:
            data = DeviceCreate.model_validate(cells)
        except ValidationError as exc:
            problems.extend(_problems_of(exc, line))
            continue
        try:
            device_id = (
                check_device_id(data.id) if data.id else derive_device_id(data.type, data.serial)
            )
        except InvalidDeviceId as exc:
            problems.append(RowProblem(line, "id", str(exc)))
            continue
        if device_id in seen:
            problems.append(
                RowProblem(line, "id", f"{device_id!r} is also on line {seen[device_id]}")
            )
            continue
        seen[device_id] = line
        checked.append((line, data.model_copy(update={"id": device_id})))
    ids = list(seen)
    taken = set()
    for start in range(0, len(ids), 500):
        taken |= set(
            session.exec(
                select(Device.id).where(col(Device.id).in_(ids[start : start + 500]))
            ).all()
        )
    numbers = {d.customer_number for _, d in checked if d.customer_number}
    known = (
        set(
            session.exec(
                select(Customer.number).where(col(Customer.number).in_(list(numbers)))
            ).all()
        )
        if numbers
        else set()
    )
    for line, data in checked:
        if data.id in taken:
            problems.append(RowProblem(line, "id", f"device {data.id!r} already exists"))
        if data.customer_number not in known:
            problems.append(
                RowProblem(line, "customer_number", f"no customer {data.customer_number!r}")
            )
    if problems:
        raise CsvImportInvalid(sorted(problems, key=lambda p: p.line))
    # Phones are checked as each device goes in: a bad one rolls every row back.
    late: list[RowProblem] = []
    with session.no_autoflush:
        for line, data in checked:
            try:
                add_device(session, data=data, actor=actor)
            except InvalidInput as exc:
                late.extend(_problems_of(exc, line))
    if late:
        session.rollback()
        raise CsvImportInvalid(late)
    audit.record(
        session,
        actor=actor,
        action="device.import",
        target=None,
        details={"devices": len(checked)},
    )
    session.commit()
    return DeviceImportReport(rows=len(rows), inserted=len(checked))


def export_customers_csv(session: Session, scope: Scope = EVERYTHING) -> Iterator[str]:
    """Every customer in ``scope`` as CSV (:data:`CUSTOMER_COLUMNS`), one row per contact;
    text cells marked."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CUSTOMER_COLUMNS)
    yield flush()
    in_scope = scope.where_customer(col(Customer.number))
    for customer in session.exec(
        select(Customer).where(in_scope).order_by(col(Customer.number))
    ).all():
        public = customer_public(session, customer)
        base = [public.number, public.name, public.country or "", public.region or ""]
        lines: list[list[str]] = [
            [c.name, c.phone or "", c.email or "", c.language or "", "", ""]
            for c in public.contacts
        ]
        lines += [["", "", "", "", s.name, s.country or ""] for s in public.sites]
        for rest in lines or [["", "", "", "", "", ""]]:
            writer.writerow([neutralize(cell) for cell in base + rest])
        yield flush()
