"""deploy/ checked by real parsers: the Compose spec, Kubernetes' schemas and hadolint.

No container engine runs here; these keep the files honest for a machine that has one.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

from stream.settings import Settings
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
KNOWN = {f"STREAMREC_{name.upper()}" for name in Settings.__dataclass_fields__}


def compose() -> dict:
    parsed = PyCompose.from_yaml((DEPLOY / "compose.yaml").read_text())
    parsed.validate()
    return parsed.to_dict()


def test_compose_file_is_valid_and_wires_kafka_topics_worker_and_monitoring():
    services = compose()["services"]
    assert set(services) == {"kafka", "topic-init", "worker", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    worker = services["worker"]
    assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert "../models/current:/models/current:ro" in worker["volumes"]  # read-only model
    init = services["topic-init"]
    script = " ".join(init["command"])
    assert all(topic in script for topic in ("events", "recommendations", "events.dlq"))
    # the topics' partition count is the one the worker is told to expect
    assert init["environment"]["PARTITIONS"] == worker["environment"]["STREAMREC_TOPIC_PARTITIONS"]


def test_the_compose_parser_refuses_a_broken_file():
    broken = (DEPLOY / "compose.yaml").read_text().replace("restart: unless-stopped", "restrat: x")
    with pytest.raises(ValueError, match="restrat"):
        PyCompose.from_yaml(broken)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_api_schema(path):
    for document in yaml.safe_load_all(path.read_text()):
        validate(document, K8S_VERSION, strict=True)


def test_the_schema_check_refuses_an_unknown_field():
    sts = yaml.safe_load((DEPLOY / "k8s" / "statefulset.yaml").read_text())
    sts["spec"]["replicaz"] = 3
    with pytest.raises(ValidationError):
        validate(sts, K8S_VERSION, strict=True)


def test_workers_are_stateful_probed_non_root_and_the_gpu_variant_asks_for_a_gpu():
    for name, provider in (("statefulset.yaml", "cpu"), ("statefulset-gpu.yaml", "cuda")):
        sts = yaml.safe_load((DEPLOY / "k8s" / name).read_text())
        pod = sts["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready/"
        assert container["livenessProbe"]["httpGet"]["path"] == "/live/"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert {"name": "STREAMREC_PROVIDER", "value": provider} in container["env"]
        models = next(m for m in container["volumeMounts"] if m["name"] == "models")
        assert models["readOnly"] is True
        assert container["resources"]["requests"]["cpu"]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == 1) == (provider == "cuda")
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in MANIFESTS}
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_every_streamrec_variable_in_deploy_is_a_setting():
    named = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in {"", ".yaml", ".yml", ".gpu", ".md"}:
            named |= set(re.findall(r"\bSTREAMREC_[A-Z0-9_]+", path.read_text()))
    assert named, "no settings found in deploy/"
    assert named <= KNOWN, sorted(named - KNOWN)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint_and_run_as_a_non_root_user(name):
    hadolint = Path(sys.executable).with_name("hadolint")
    path = DEPLOY / name
    result = subprocess.run(
        [str(hadolint), "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert "USER 10001:10001" in text and "COPY models" not in text


def test_dashboard_queries_only_metrics_the_worker_exports(tmp_path):
    from stream.telemetry.metrics import BUCKETS, Metrics
    from tests.stream.telemetry.test_prometheus import render

    metrics = Metrics()
    metrics.inc("dlq_reason.not_json")
    metrics.inc("delivery_failures")  # once the broker refused a delivery
    metrics.inc("deliveries_retried")
    for tally in ("lists", "users", "clicks", "purchases"):  # once lists go out
        metrics.inc(f"arm_{tally}.control")
    for name in BUCKETS:
        metrics.observe(name, 1.0)
    exported = {name for name, _ in render(metrics)}
    queried = set(
        re.findall(r"streamrec_[a-z_]+", (DEPLOY / "grafana/dashboards/streamrec.json").read_text())
    )
    assert queried and queried <= exported, sorted(queried - exported)


def test_every_worker_that_binds_all_interfaces_gets_its_web_token_from_a_secret():
    """The images bind 0.0.0.0 (the worker refuses that without STREAMREC_WEB_TOKEN)."""
    worker = compose()["services"]["worker"]
    assert worker["env_file"] in ("worker.env", ["worker.env"])
    example = (DEPLOY / "worker.env.example").read_text()
    assert re.search(r"^STREAMREC_WEB_TOKEN=", example, re.MULTILINE)
    assert "/deploy/worker.env" in (DEPLOY.parent / ".gitignore").read_text()
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret-web-example.yaml").read_text())
    assert secret["metadata"]["name"] == "streamrec-web"
    assert "STREAMREC_WEB_TOKEN" in secret["stringData"]
    for name in ("statefulset.yaml", "statefulset-gpu.yaml"):
        sts = yaml.safe_load((DEPLOY / "k8s" / name).read_text())
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        required = [
            ref["secretRef"]["name"]
            for ref in container["envFrom"]
            if "secretRef" in ref and not ref["secretRef"].get("optional")
        ]
        assert required == ["streamrec-web"], name
