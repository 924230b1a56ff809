"""docker-compose.yml, parsed (no Docker engine runs here): services, volumes, ports, health check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> 'source[:mode]'."""
    out = {}
    for v in service["volumes"]:
        source, target, *mode = v.split(":")
        out[target] = source + (":" + mode[0] if mode else "")
    return out


def test_services_and_the_shared_snapshot_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "ingest", "api-gpu", "ingest-gpu"} <= set(services)
    assert "snapshots" in compose["volumes"]
    index_dir = services["api"]["environment"]["NOTESRAG_INDEX_DIR"]
    assert mounts(services["api"])[index_dir] == "snapshots:ro"  # the API only reads snapshots
    assert mounts(services["ingest"])[index_dir] == "snapshots"  # the job writes them
    assert mounts(services["api-gpu"])[index_dir] == "snapshots:ro"
    assert services["api"]["depends_on"]["ingest"]["condition"] == "service_completed_successfully"
    assert services["ingest"]["restart"] == "no"


def test_api_runs_uvicorn_workers_on_port_8000_with_keys(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    cmd = api["command"]
    # `notesrag serve`, so uvicorn runs with the wire settings (service.server.uvicorn_options)
    assert cmd[:2] == ["notesrag", "serve"] and "--workers" in cmd
    assert cmd[cmd.index("--port") + 1] == "8000" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "ports" not in api and api["expose"] == ["8000"]  # replicas: only the load balancer publishes
    assert ":?" in api["environment"]["NOTESRAG_API_KEYS"]  # compose refuses to start without keys


def test_only_the_load_balancer_is_a_trusted_proxy(compose: dict[str, Any]) -> None:
    import ipaddress

    lb = compose["services"]["lb"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(lb) in ipaddress.ip_network(subnet)
    services = compose["services"]
    assert services["api"]["environment"]["NOTESRAG_TRUSTED_PROXIES"] == lb
    assert "NOTESRAG_TRUSTED_PROXIES" not in services["api-gpu"]["environment"]  # published directly
    assert services["api-gpu"]["command"][:2] == ["notesrag", "serve"]


def test_health_check_probes_readyz(compose: dict[str, Any]) -> None:
    for name in ("api", "api-gpu"):
        hc = compose["services"][name]["healthcheck"]
        assert "/readyz" in " ".join(hc["test"]) and hc["test"][0] == "CMD"
        assert hc["retries"] >= 1 and "start_period" in hc


def test_ingest_command_is_a_real_cli_invocation(compose: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    cmd = compose["services"]["ingest"]["command"]
    assert cmd[:2] == ["notesrag", "ingest"]
    help_text = CliRunner().invoke(app, ["ingest", "--help"]).output
    for flag in (a for a in cmd[2:] if a.startswith("--")):
        assert flag in help_text, flag


def test_gpu_profile_uses_the_nvidia_runtime_and_faiss_gpu(compose: dict[str, Any]) -> None:
    for name in ("api-gpu", "ingest-gpu"):
        svc = compose["services"][name]
        assert svc["profiles"] == ["gpu"]
        assert svc["runtime"] == "nvidia"
        device = svc["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert svc["environment"]["NOTESRAG_DEVICE"] == "cuda"
    assert compose["services"]["ingest-gpu"]["build"]["args"]["EXTRAS"] == "gpu,milvus"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "faiss-gpu" in dockerfile and "ARG EXTRAS" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_replicas_behind_nginx(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api, lb = services["api"], services["lb"]
    replicas = api["deploy"]["replicas"]
    assert replicas.startswith("${NOTESRAG_REPLICAS:-") and int(replicas.split(":-")[1].rstrip("}")) >= 2
    assert lb["image"].startswith("nginx:") and "8000:8000" in lb["ports"]
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"  # api's health check is /readyz
    assert "/readyz" in " ".join(lb["healthcheck"]["test"])
    conf_source, conf_target = lb["volumes"][0].split(":")[:2]
    assert conf_target == "/etc/nginx/nginx.conf"
    conf = (ROOT / conf_source).read_text()
    assert "server api:8000 resolve" in conf and "resolver 127.0.0.11" in conf  # every replica, re-resolved
    assert "proxy_buffering off" in conf  # server-sent events pass as they come
    assert "http_503" in conf.split("proxy_next_upstream ")[1].split(";")[0]  # not-ready replicas skipped
    assert conf.count("{") == conf.count("}")


def test_milvus_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    milvus = services["milvus"]
    assert milvus["profiles"] == ["milvus"] and milvus["image"].startswith("milvusdb/milvus:")
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    assert "milvus" in compose["volumes"]
    for name in ("api", "ingest"):
        dep = services[name]["depends_on"]["milvus"]
        assert dep == {"condition": "service_healthy", "required": False}  # faiss needs no Milvus
    env = compose["x-env"]
    assert env["NOTESRAG_VECTOR_BACKEND"] == "${NOTESRAG_VECTOR_BACKEND:-faiss}"
    from service.settings import Settings

    fields = Settings.model_fields
    assert "vector_backend" in fields and "milvus_uri" in fields
