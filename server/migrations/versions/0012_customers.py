"""customers: customer records, contacts, sites and incoming calls

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 04:21:18.797271

- ``customer`` (by its number: what a caller keys into the IVR), its
  ``customer_contact`` rows (phones in E.164) and ``customer_site`` rows.
- ``phone_call``: every incoming call the desk saw (the CTI screen-pop).
- ``device.customer_number`` points to the customer; ``device.contact_phone_e164``
  is the contact phone in E.164 when it reads as one.
- Data: every distinct free-text ``device.customer`` becomes a customer with the
  next number from 100001 (in name order); every device points to its customer,
  none is lost. A contact phone that is international (``+``/``00``) gets its
  E.164 form; a local one stays unmatched until its customer gets a country.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import server.models.base

#: The first number given to a customer made from a device's free-text customer.
FIRST_NUMBER = 100001

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
        sa.Column("region", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("created_at", server.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_name"), ["name"], unique=False)

    op.create_table(
        "customer_contact",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("customer_number", sa.String(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.ForeignKeyConstraint(["customer_number"], ["customer.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("customer_contact", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_contact_customer_number"), ["customer_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_customer_contact_phone"), ["phone"], unique=False)

    op.create_table(
        "customer_site",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("customer_number", sa.String(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
        sa.Column("region", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.ForeignKeyConstraint(["customer_number"], ["customer.number"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_number", "name", name="uq_customer_site"),
    )
    with op.batch_alter_table("customer_site", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_site_customer_number"), ["customer_number"], unique=False
        )

    op.create_table(
        "phone_call",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("ani", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("ani_e164", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("customer_number", sa.String(length=32), nullable=True),
        sa.Column("device_id", sa.String(length=63), nullable=True),
        sa.Column("operator", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("started_at", server.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answered_at", server.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", server.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(["customer_number"], ["customer.number"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["incident_id"], ["incident.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("phone_call", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_phone_call_ani_e164"), ["ani_e164"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_phone_call_customer_number"), ["customer_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_phone_call_device_id"), ["device_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_phone_call_external_id"), ["external_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_phone_call_incident_id"), ["incident_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_phone_call_started_at"), ["started_at"], unique=False)

    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_number", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column(
                "contact_phone_e164", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True
            )
        )
        batch_op.create_index(
            batch_op.f("ix_device_contact_phone_e164"), ["contact_phone_e164"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_device_customer_number"), ["customer_number"], unique=False
        )

    _customers_from_devices()
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_device_customer_number", "customer", ["customer_number"], ["number"]
        )


def _e164(raw: str | None) -> str | None:
    """An international number in E.164 (the migration knows no country for local ones)."""
    import phonenumbers

    text = (raw or "").strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _customers_from_devices() -> None:
    """One customer per distinct free-text customer; every device points to its own."""
    from datetime import UTC, datetime

    bind = op.get_bind()
    device = sa.table(
        "device",
        sa.column("id", sa.String()),
        sa.column("customer", sa.String()),
        sa.column("region", sa.String()),
        sa.column("contact_phone", sa.String()),
        sa.column("customer_number", sa.String()),
        sa.column("contact_phone_e164", sa.String()),
    )
    customer = sa.table(
        "customer",
        sa.column("number", sa.String()),
        sa.column("name", sa.String()),
        sa.column("region", sa.String()),
        sa.column("created_at", server.models.base.UTCDateTime()),
    )
    names = bind.execute(
        sa.select(device.c.customer, sa.func.min(device.c.region))
        .group_by(device.c.customer)
        .order_by(device.c.customer)
    ).all()
    now = datetime.now(UTC)
    for offset, (name, region) in enumerate(names):
        number = str(FIRST_NUMBER + offset)
        bind.execute(
            customer.insert().values(number=number, name=name, region=region, created_at=now)
        )
        bind.execute(
            device.update().where(device.c.customer == name).values(customer_number=number)
        )
    phones = bind.execute(
        sa.select(device.c.id, device.c.contact_phone).where(device.c.contact_phone.is_not(None))
    ).all()
    for device_id, phone in phones:
        e164 = _e164(phone)
        if e164 is not None:
            bind.execute(
                device.update().where(device.c.id == device_id).values(contact_phone_e164=e164)
            )


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_constraint("fk_device_customer_number", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_device_customer_number"))
        batch_op.drop_index(batch_op.f("ix_device_contact_phone_e164"))
        batch_op.drop_column("contact_phone_e164")
        batch_op.drop_column("customer_number")

    with op.batch_alter_table("phone_call", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_phone_call_started_at"))
        batch_op.drop_index(batch_op.f("ix_phone_call_incident_id"))
        batch_op.drop_index(batch_op.f("ix_phone_call_external_id"))
        batch_op.drop_index(batch_op.f("ix_phone_call_device_id"))
        batch_op.drop_index(batch_op.f("ix_phone_call_customer_number"))
        batch_op.drop_index(batch_op.f("ix_phone_call_ani_e164"))

    op.drop_table("phone_call")
    with op.batch_alter_table("customer_site", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_site_customer_number"))

    op.drop_table("customer_site")
    with op.batch_alter_table("customer_contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_contact_phone"))
        batch_op.drop_index(batch_op.f("ix_customer_contact_customer_number"))

    op.drop_table("customer_contact")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_name"))

    op.drop_table("customer")
