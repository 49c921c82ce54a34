#!/bin/bash
# Creates linewatch's login roles. Runs once, when the TimescaleDB container initialises an empty
# data volume (it is mounted into /docker-entrypoint-initdb.d by docker-compose.yml), before any
# migration: the group roles are created here too (as sql/002_roles.sql does, idempotently) so the
# logins can join them; the privileges of the groups come from the migrations, which the `migrate`
# service runs afterwards as the database owner.
#
#   GRAFANA_PG_USER   read-only login for Grafana (member of linewatch_reader, read-only sessions,
#                     30 s statement timeout so a heavy dashboard cannot hog the database)
#   WORKER_PG_USER    login for the workers (member of linewatch_writer: read, append the rows they
#                     write, nothing else; see sql/090_least_privilege.sql). No CREATE on schema
#                     public: the start-up migration check only reads schema_migrations, and a login
#                     that can create tables could pre-create one a later migration expects and own it.
#   TRAINER_PG_USER   login for `linewatch train` (member of linewatch_registrar: register a model
#                     version and its artifact, deactivate one; and of linewatch_reader, so training
#                     data can come from the database).
# Safe to run again on an existing database (every statement is idempotent): that is how an older
# volume gets the trainer login.
set -euo pipefail

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${GRAFANA_PG_USER:?}" "${GRAFANA_PG_PASSWORD:?}" "${WORKER_PG_USER:?}" "${WORKER_PG_PASSWORD:?}"
: "${TRAINER_PG_USER:?}" "${TRAINER_PG_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v grafana_user="$GRAFANA_PG_USER" -v grafana_password="$GRAFANA_PG_PASSWORD" \
     -v worker_user="$WORKER_PG_USER" -v worker_password="$WORKER_PG_PASSWORD" \
     -v trainer_user="$TRAINER_PG_USER" -v trainer_password="$TRAINER_PG_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE linewatch_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_reader') \gexec
SELECT 'CREATE ROLE linewatch_writer NOLOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_writer') \gexec
SELECT 'CREATE ROLE linewatch_registrar NOLOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'linewatch_registrar') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'grafana_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'grafana_user') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'worker_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'worker_user') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'trainer_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'trainer_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'grafana_user', :'grafana_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'worker_user', :'worker_password') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'trainer_user', :'trainer_password') \gexec

GRANT linewatch_reader TO :"grafana_user";
ALTER ROLE :"grafana_user" SET default_transaction_read_only = on;
ALTER ROLE :"grafana_user" SET statement_timeout = '30s';

GRANT linewatch_writer TO :"worker_user";
-- An older version of this script granted it; take it back where it did.
REVOKE CREATE ON SCHEMA public FROM :"worker_user";

GRANT linewatch_registrar, linewatch_reader TO :"trainer_user";
SQL
