"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from rgzlabel.env import database_from_url, redis_url

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ["web", "worker", "gpu-worker", "beat"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def queues_of(service: dict) -> set[str]:
    command = command_of(service)
    return set(command[command.index("-Q") + 1].split(","))


def test_it_has_the_full_stack(compose: dict) -> None:
    assert set(compose["services"]) >= {"postgres", "redis", *APP_SERVICES}


def test_workers_split_the_queues(compose: dict) -> None:
    services = compose["services"]
    assert queues_of(services["worker"]) == {"default"}
    assert queues_of(services["gpu-worker"]) == {"gpu"}
    # One task at a time per GPU.
    gpu_command = command_of(services["gpu-worker"])
    assert gpu_command[gpu_command.index("-c") + 1] == "1"
    for name in ("worker", "gpu-worker", "beat"):
        command = command_of(services[name])
        assert command[:3] == ["celery", "-A", "workers"], name
    assert "beat" in command_of(services["beat"])


def test_the_queues_are_the_ones_the_app_routes_to(compose: dict) -> None:
    from rgzlabel.learning.dispatch import TASKS
    from workers.celery import app

    declared = {queue.name for queue in app.conf.task_queues}
    routed = {queue for _, queue in TASKS.values()}
    consumed = queues_of(compose["services"]["worker"]) | queues_of(compose["services"]["gpu-worker"])
    assert routed <= declared
    assert routed <= consumed


def test_the_gpu_worker_requests_an_nvidia_device(compose: dict) -> None:
    devices = compose["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert compose["services"]["gpu-worker"]["environment"]["RGZ_TORCH_DEVICE"] == "cuda"


def test_app_services_point_at_the_compose_database_and_broker(compose: dict) -> None:
    postgres = compose["services"]["postgres"]["environment"]
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        database = database_from_url("DATABASE_URL", environment["DATABASE_URL"])
        assert database["ENGINE"] == "django.db.backends.postgresql"
        assert database["HOST"] == "postgres"
        assert (database["USER"], database["PASSWORD"], database["NAME"]) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        )
        assert urlsplit(redis_url("REDIS_URL", environment["REDIS_URL"])).hostname == "redis"
        assert environment["DJANGO_DEBUG"] == "false"
        assert set(compose["services"][name]["depends_on"]) >= {"postgres", "redis"}


def test_every_variable_it_sets_is_a_documented_setting(compose: dict) -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    settings_source = (ROOT / "rgzlabel" / "settings.py").read_text()
    for name in APP_SERVICES:
        for variable in compose["services"][name]["environment"]:
            base = variable.removesuffix("_FILE")
            assert base in documented, f"{variable} is not in .env.example"
            assert f'"{base}"' in settings_source, f"{variable} is not read by rgzlabel/settings.py"


def test_web_scales_out_behind_the_proxy(compose: dict) -> None:
    """`docker compose up --scale web=N`: no replica binds a host port, one service migrates."""
    services = compose["services"]
    assert "ports" not in services["web"]  # a fixed host port would stop a second replica
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    migrating = [
        name
        for name, service in services.items()
        if "manage.py migrate" in " ".join(command_of(service) if "command" in service else [])
    ]
    assert migrating == ["migrate"]
    proxy = services["proxy"]
    assert any(port.endswith(":80") for port in proxy["ports"])
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    # The name in a variable, re-resolved: replicas added later are used without a reload.
    assert re.search(r"set \$web http://web:8000;", text) and "proxy_pass $web;" in text
    assert re.search(r"resolver 127\.0\.0\.11 valid=\d+s", text)
