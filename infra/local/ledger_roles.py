#!/usr/bin/env python3
"""Set up a PostgreSQL database for the deletion-request ledger: the roles of ledger_roles.sql, the tables and
their append-only triggers created by the owner role, and the app role's URL for HYPERFORGET_LEDGER_URL.

    .venv/bin/python infra/local/ledger_roles.py postgresql://postgres@host:5432/ledger \
        [--owner-password P] [--app-password P]

prints the owner's and the app's URLs (passwords hidden). The admin URL needs a superuser (or a CREATEROLE role
that owns the database). Needs the project installed (SQLAlchemy, psycopg, hyperforget); safe to run again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SQL = Path(__file__).with_name("ledger_roles.sql")
OWNER, APP = "hyperforget_ledger_owner", "hyperforget_ledger_app"


def apply_roles(admin_url: str, owner_password: str | None = None, app_password: str | None = None) -> dict[str, str]:
    """Apply ledger_roles.sql as `admin_url`, create the ledger's tables as the owner, and return the owner's and
    the app's URLs (same host and database, with their passwords) under "owner" and "app"."""
    import sqlalchemy as sa

    from hyperforget.erasure import ledger_store

    admin = ledger_store.make_url(admin_url)
    engine = sa.create_engine(admin)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(SQL.read_text())
            for role, password in ((OWNER, owner_password), (APP, app_password)):
                if password:
                    literal = sa.literal(password).compile(dialect=engine.dialect,
                                                           compile_kwargs={"literal_binds": True})
                    conn.exec_driver_sql(f"ALTER ROLE {role} PASSWORD {literal}")
    finally:
        engine.dispose()
    urls = {name: admin.set(username=role, password=password).render_as_string(hide_password=False)
            for name, role, password in (("owner", OWNER, owner_password), ("app", APP, app_password))}
    ledger_store.create_tables(urls["owner"])  # the default privileges above grant the app SELECT, INSERT on them
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("admin_url", help="a superuser's URL of the ledger's database")
    parser.add_argument("--owner-password")
    parser.add_argument("--app-password")
    args = parser.parse_args()
    import sqlalchemy as sa

    for name, url in apply_roles(args.admin_url, args.owner_password, args.app_password).items():
        print(f"{name}: {sa.engine.make_url(url).render_as_string(hide_password=True)}")


if __name__ == "__main__":
    main()
