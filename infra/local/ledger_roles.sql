-- The deletion-request ledger's PostgreSQL roles (hyperforget/erasure/ledger.py). Apply it as a superuser, or a
-- role with CREATEROLE that owns the database, in the ledger's database; it is safe to apply again. Then create
-- the tables as the owner and give the application the app role's URL: infra/local/ledger_roles.py does all three.
--
--   hyperforget_ledger_owner  owns the schema, its tables and their append-only triggers: the only login that can
--                             change them (a DBA). Nothing of HyperForget's runs as this role day to day.
--   hyperforget_ledger_app    what HYPERFORGET_LEDGER_URL logs in as: SELECT and INSERT on the ledger's tables,
--                             USAGE on their id sequences; no UPDATE, DELETE or TRUNCATE, no DDL (it owns nothing
--                             and may create nothing), so it can neither edit a row nor drop a trigger. What it
--                             can still do, INSERT a row of its own, the signed hash chain exposes on every read.
--
-- Passwords are not set here (apply_roles sets them, or set them yourself: ALTER ROLE ... PASSWORD '...').

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hyperforget_ledger_owner') THEN
        CREATE ROLE hyperforget_ledger_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hyperforget_ledger_app') THEN
        CREATE ROLE hyperforget_ledger_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END
$$;

-- nobody but the owner may create objects where the ledger lives (PostgreSQL 15+ already refuses it in public)
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS hyperforget_ledger AUTHORIZATION hyperforget_ledger_owner;
REVOKE ALL ON SCHEMA hyperforget_ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA hyperforget_ledger TO hyperforget_ledger_app;  -- USAGE, not CREATE: no DDL

ALTER ROLE hyperforget_ledger_owner SET search_path = hyperforget_ledger;
ALTER ROLE hyperforget_ledger_app SET search_path = hyperforget_ledger;

-- tables and sequences the owner creates in the schema, now or later, are readable and appendable by the app
ALTER DEFAULT PRIVILEGES FOR ROLE hyperforget_ledger_owner IN SCHEMA hyperforget_ledger
    GRANT SELECT, INSERT ON TABLES TO hyperforget_ledger_app;
ALTER DEFAULT PRIVILEGES FOR ROLE hyperforget_ledger_owner IN SCHEMA hyperforget_ledger
    GRANT USAGE ON SEQUENCES TO hyperforget_ledger_app;
-- and so are those that already exist (applying this file again after the tables were made)
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA hyperforget_ledger TO hyperforget_ledger_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA hyperforget_ledger TO hyperforget_ledger_app;
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA hyperforget_ledger
    FROM hyperforget_ledger_app;
