"""There is no Docker engine here, so docker-compose.yml, the Dockerfile and .env.example are checked against
the code instead: commands the CLI accepts, ports the server binds, variables Settings knows, shared volumes."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest
import yaml

from api.settings import Settings
from tests.utils.service import REPO, child_env

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# Variables a service may set that are not ours (read by libraries or the images themselves).
# HF_TOKEN: huggingface_hub reads it for `uds models add <hub-id>`.
FOREIGN = {"HF_HOME", "HF_TOKEN", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
SUBSTITUTION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?]([^}]*))?\}")


def substitute(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error}, with .env.example's values."""
    env = env if env is not None else dotenv_example()

    def replace(match):
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        return default if default is not None and not match.group(0).startswith(f"${{{name}:?") else ""

    return SUBSTITUTION.sub(replace, value)


def dotenv_example() -> dict[str, str]:
    pairs = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def environment(service: str) -> dict[str, str]:
    return {k: substitute(str(v)) for k, v in SERVICES[service]["environment"].items()}


def test_services_present():
    assert {"postgres", "redis", "api", "worker"} <= set(SERVICES)


@pytest.mark.parametrize("service", ["api", "worker"])
def test_every_variable_is_a_setting_and_settings_accept_them(service, monkeypatch):
    env = environment(service)
    fields = set(Settings.model_fields)
    for name in env:
        if name not in FOREIGN:
            assert name.startswith("UDS_") and name.removeprefix("UDS_").lower() in fields, name
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert not settings.embedded and settings.sqlalchemy_url.startswith("postgresql+psycopg://")
    assert str(settings.data_dir) == "/data"
    assert settings.bootstrap_api_key is not None


def test_urls_point_at_the_other_services():
    from sqlalchemy.engine import make_url

    env = environment("api")
    assert env == {k: v for k, v in environment("worker").items() if k != "UDS_DEVICE"}  # same view of the world
    db = make_url(env["UDS_DATABASE_URL"])
    postgres = {k: substitute(str(v)) for k, v in SERVICES["postgres"]["environment"].items()}
    assert (db.host, db.port, db.username, db.password, db.database) == (
        "postgres",
        5432,
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert env["UDS_BROKER_URL"].startswith("redis://redis:6379/")
    assert environment("worker")["UDS_DEVICE"] == "cuda"


def cli_help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--help"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def test_api_command_migrates_then_serves_on_the_published_port():
    command = SERVICES["api"]["command"]
    assert command[:2] == ["sh", "-c"]
    steps = [s.strip() for s in command[2].split("&&")]
    assert steps[0] == "alembic upgrade head"
    serve = steps[1].removeprefix("exec ").split()
    assert serve[:2] == ["uds", "serve"]
    options = flags(serve)
    assert options["--host"] == "0.0.0.0"  # all interfaces: keys required (Settings.auth_required)
    help_text = cli_help("serve")
    assert all(flag in help_text for flag in options)
    assert {"host", "port"} <= set(inspect.signature(__import__("cli.service", fromlist=["serve"]).serve).parameters)
    published = [substitute(p) for p in SERVICES["api"]["ports"]]
    assert [p.split(":")[-1] for p in published] == [options["--port"]]
    health = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert f"127.0.0.1:{options['--port']}/readyz" in health
    from api.main import create_app

    assert "/readyz" in create_app(Settings()).openapi()["paths"]
    ini = (REPO / "alembic.ini").read_text()
    assert "script_location = %(here)s/migrations" in ini and (REPO / "migrations" / "env.py").is_file()


def test_worker_command_consumes_the_queue_the_api_sends_to():
    command = SERVICES["worker"]["command"]
    assert command[:2] == ["uds", "worker"]
    options = flags(command)
    help_text = cli_help("worker")
    assert all(flag in help_text for flag in options)
    from cli.worker import run_worker

    assert {"concurrency", "queues"} <= set(inspect.signature(run_worker).parameters)
    assert options["--queues"] == environment("api")["UDS_QUEUE"] == environment("worker")["UDS_QUEUE"]
    assert SERVICES["worker"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_worker_trains_on_n_distinct_gpus():
    """`count: 1` reservations scaled to N replicas all get the same GPU (Docker does not hand
    out distinct devices per replica). One worker reserves the host's GPUs and runs one process per GPU; pool
    process i trains on cuda:i (tests/worker/test_celery_app.py::test_pool_process_i_gets_gpu_i)."""
    from cli.main import _parser
    from cli.worker import worker_concurrency

    command = SERVICES["worker"]["command"]
    concurrency = _parser().parse_args(command[1:]).concurrency
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    device = environment("worker")["UDS_DEVICE"]
    for gpus in (1, 2, 4, 8):  # as many processes as the reservation gives GPUs, each its own cuda:i
        assert worker_concurrency(concurrency, device, count_gpus=lambda: gpus) == gpus  # noqa: B023 (called before the loop moves on)
    assert "replicas" not in SERVICES["worker"].get("deploy", {})
    assert "--scale worker" not in (REPO / "docker-compose.yml").read_text().replace("Do not `--scale worker", "")


def test_worker_concurrency_is_checked_against_the_visible_gpus():
    from cli.worker import worker_concurrency

    assert worker_concurrency(2, "cuda", count_gpus=lambda: 4) == 2
    with pytest.raises(RuntimeError, match="--concurrency 4 with UDS_DEVICE=cuda .*needs 4 GPUs; 2 are visible"):
        worker_concurrency(4, "cuda", count_gpus=lambda: 2)
    with pytest.raises(RuntimeError, match="but 0 are visible"):
        worker_concurrency("auto", "cuda", count_gpus=lambda: 0)
    assert worker_concurrency("auto", "cpu", count_gpus=lambda: 1 / 0) == 1  # no GPU count off cuda
    assert worker_concurrency(3, "cuda:1", count_gpus=lambda: 1 / 0) == 3


def test_artifacts_volume_is_shared_at_the_data_dir():
    mounts = {}
    for service in ("api", "worker"):
        source, target = SERVICES[service]["volumes"][0].split(":")[:2]
        mounts[service] = (source, target)
        assert target == environment(service)["UDS_DATA_DIR"]
    assert mounts["api"] == mounts["worker"] and mounts["api"][0] in COMPOSE["volumes"]
    for service in ("api", "worker"):
        assert SERVICES[service]["depends_on"]
    assert SERVICES["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def test_env_example_covers_the_compose_variables():
    documented = dotenv_example()
    text = (REPO / "docker-compose.yml").read_text()
    for match in SUBSTITUTION.finditer(text):
        name = match.group(1)
        assert name in documented or match.group(0).startswith(f"${{{name}:-"), name
    for name in documented:
        if name.startswith("UDS_"):
            assert name.removeprefix("UDS_").lower() in Settings.model_fields, name
    assert re.search(r"\$\{UDS_BOOTSTRAP_API_KEY:\?", text)  # compose refuses to start without a key


def test_compose_refuses_to_start_without_a_postgres_password():
    """No silent fallback to a password everyone knows; both users of it fail fast."""
    text = (REPO / "docker-compose.yml").read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD[^}]*\}", text)
    assert len(uses) == 2 and all(use.startswith("${POSTGRES_PASSWORD:?") for use in uses), uses
    without = {k: v for k, v in dotenv_example().items() if k != "POSTGRES_PASSWORD"}
    assert substitute(SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"], without) == ""


def test_dockerfile_builds_what_the_commands_need():
    dockerfile = (REPO / "Dockerfile").read_text()
    for path in ("uds", "api", "worker", "cli", "migrations"):
        assert re.search(rf"^COPY {path} \./{path}$", dockerfile, re.M), path
        assert (REPO / path).is_dir()
    assert "alembic.ini" in dockerfile and "EXPOSE 8000" in dockerfile
    assert "ARG TORCH_INDEX_URL" in dockerfile
    assert SERVICES["worker"]["build"]["args"]["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    assert 'uds = "cli.main:main"' in (REPO / "pyproject.toml").read_text()
    assert "UDS_DATA_DIR=/data" in dockerfile


# ---- the monitoring profile ---------------------------------------------------------------------------------

MONITORING = ("prometheus", "grafana")
DEPLOY = REPO / "deploy"


def mounts(service: str) -> dict[str, str]:
    """Bind mounts of a service: container path -> repository path (named volumes left out)."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source
    return found


def test_monitoring_is_an_opt_in_profile():
    for service in MONITORING:
        assert SERVICES[service]["profiles"] == ["monitoring"], service
        for published in SERVICES[service]["ports"]:
            assert substitute(published).startswith("127.0.0.1:"), published  # not beyond this host
        for target, source in mounts(service).items():
            assert (REPO / source).exists(), (service, source, target)
    for service in ("postgres", "redis", "api", "worker"):
        assert "profiles" not in SERVICES[service]  # a plain `docker compose up` is unchanged


def test_prometheus_scrapes_the_api_where_the_code_serves_metrics(tmp_path):
    service = SERVICES["prometheus"]
    config_flag = next(arg for arg in service["command"] if arg.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    config = yaml.safe_load((REPO / mounts("prometheus")[config_path]).read_text())
    [job] = config["scrape_configs"]
    [target] = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    serve = flags(SERVICES["api"]["command"][2].split("&&")[1].removeprefix(" exec ").split())
    assert host == "api" and port == serve["--port"]  # the service name and the port `uds serve` binds inside
    assert job.get("scheme", "http") == "http" and job["metrics_path"] == "/metrics"

    # The token: the secret Prometheus reads is the variable the API reads as UDS_METRICS_TOKEN.
    assert job["authorization"]["type"] == "Bearer"
    secret = job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in service["secrets"] and COMPOSE["secrets"][secret]["environment"] == "UDS_METRICS_TOKEN"
    assert environment("api")["UDS_METRICS_TOKEN"] == ""  # from .env; empty by default: /metrics refused
    assert "metrics_token" in Settings.model_fields

    # What Prometheus does, against the real app: the path with the bearer token, and nothing without it.
    from fastapi.testclient import TestClient

    from api.main import create_app

    token = "metrics-" + "x" * 32
    app = create_app(Settings(data_dir=tmp_path / "data", host="0.0.0.0", metrics_token=token))
    with TestClient(app) as client:
        assert client.get(job["metrics_path"], headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get(job["metrics_path"]).status_code == 401
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", host="0.0.0.0"))) as client:
        assert client.get(job["metrics_path"]).status_code == 403  # the default (empty token): off


def test_grafana_loads_the_datasource_and_dashboard_without_clicks():
    grafana = mounts("grafana")
    provisioning = REPO / grafana["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090" and "9090" in SERVICES["prometheus"]["ports"][0]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "uds.yml").read_text())["providers"]
    dashboards = provider["options"]["path"]
    assert grafana[dashboards] == "./deploy/grafana/dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards + "/") and (REPO / grafana[dashboards] / home.rsplit("/", 1)[1]).is_file()
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"]), panel["title"]


def dashboard_panels() -> list[dict]:
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "uds.json").read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exported_metric_names(tmp_path) -> set[str]:
    """Every series name a real scrape of a fresh service can have (a family with no samples yet included)."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from api.main import create_app

    token = "metrics-" + "y" * 32
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", metrics_token=token))) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum", ""]}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
        names |= {sample.name for sample in family.samples}
    return names


def test_every_dashboard_query_names_a_metric_the_service_exports(tmp_path):
    exported = exported_metric_names(tmp_path)
    assert {"uds_jobs", "uds_http_requests_total", "uds_job_duration_seconds_bucket"} <= exported
    panels = dashboard_panels()
    titles = " ".join(p["title"].lower() for p in panels)
    assert all(word in titles for word in ("queued", "per second", "failed", "latency"))
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"\buds_[a-z0-9_]+", target["expr"]))
            assert named and named <= exported, (panel["title"], named - exported)
