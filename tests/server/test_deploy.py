"""The deployment files agree with the server they deploy: the Kubernetes manifests and
the Dockerfile are parsed, their flags go through `handspring serve`'s own parser, and
their probe paths are asked of a real server on loopback."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from handspring.server.app import create_app
from handspring.server.command import config_from_options, serve
from handspring.server.config import ModelSpec, ServerConfig
from tests.support.live_server import running

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# Measured with bench/server_bench.py (int8 CLIP ViT-B/32 image+text server, 2 CPUs;
# see docs/server.md). The manifests' memory must cover them.
SERVER_RSS_MIB = 281  # VmRSS after 10k requests (9 texts : 1 image of 640x480)
SERVER_PEAK_MIB = 739  # VmHWM after 32 clients each sent 12 MP JPEGs
GRAPH_BUILD_PEAK_MIB = 1182  # VmHWM of a process building the int8 graphs of both towers

MODEL_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth", ".gguf", ".npz")
# Read by the graph cache, not by `handspring serve`'s options.
NON_FLAG_VARIABLES = {"HANDSPRING_CACHE"}


# ------------------------------------------------------------------ parsing


def _documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[doc["kind"]] = doc | {"_file": path.name}
    return found


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return _documents()


@pytest.fixture(scope="module")
def pod(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def server(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == "handspring"]
    return container


@pytest.fixture(scope="module")
def builder(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["initContainers"]
    return container


@pytest.fixture(scope="module")
def config_env(docs: dict[str, dict[str, Any]], server: dict[str, Any]) -> dict[str, str]:
    """The variables the server container gets from the generated ConfigMap."""
    (source,) = server["envFrom"]
    name = source["configMapRef"]["name"]
    (generator,) = [g for g in docs["Kustomization"]["configMapGenerator"] if g["name"] == name]
    return dict(literal.split("=", 1) for literal in generator["literals"])


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "k": 1e3 / 2**20, "M": 1e6 / 2**20}
    units["G"] = 1e9 / 2**20
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?|k)?", str(quantity))
    assert match, f"not a memory quantity: {quantity!r}"
    number, unit = match.groups()
    return float(number) * (units[unit] if unit else 1 / 2**20)


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        assert stages, "an instruction before the first FROM"
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def one(stage: list[tuple[str, str]], word: str) -> str:
    (value,) = [rest for w, rest in stage if w == word]
    return value


def serve_variables() -> set[str]:
    return {p.envvar for p in serve.params if isinstance(p.envvar, str)}


def serve_variable(param: str) -> str:
    (name,) = [p.envvar for p in serve.params if p.name == param]
    return name


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A port given by number or by a container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


# ---------------------------------------------------------------- manifests


def test_the_kustomization_lists_every_manifest(docs: dict[str, dict[str, Any]]) -> None:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(docs["Kustomization"]["resources"]) == files
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(docs)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_config_into_both_containers() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], check=True, capture_output=True, text=True
    ).stdout
    rendered = {d["kind"]: d for d in yaml.safe_load_all(out)}
    generated = rendered["ConfigMap"]["metadata"]["name"]
    assert generated.startswith("handspring-config-")  # hashed, so a change rolls the pods
    spec = rendered["Deployment"]["spec"]["template"]["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        assert container["envFrom"] == [{"configMapRef": {"name": generated}}]
        assert container["volumeMounts"][0]["readOnly"] is True  # the YAML anchors expanded


def test_the_server_args_are_flags_handspring_serve_accepts(
    server: dict[str, Any], config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("HANDSPRING_")]:
        monkeypatch.delenv(name)
    for name, value in config_env.items():
        monkeypatch.setenv(name, value)
    command, *args = server["args"]
    assert command == "serve"  # the image's ENTRYPOINT is `handspring`
    params = serve.make_context("serve", list(args)).params
    config = config_from_options(params)
    assert config.host == "0.0.0.0"  # a pod must listen beyond its loopback
    assert config.port == server["ports"][0]["containerPort"]
    assert config.preload  # readiness then waits for the model, not the first request
    assert config.threads == int(server["resources"]["requests"]["cpu"])
    assert [m.name for m in config.models] == ["clip"]
    assert all(m.source.startswith("/models/") for m in config.models)


def test_the_pod_listens_outside_with_the_secrets_key_or_the_configs_opt_out(
    server: dict[str, Any], config_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("HANDSPRING_")]:
        monkeypatch.delenv(name)
    for name, value in config_env.items():
        monkeypatch.setenv(name, value)

    def config() -> ServerConfig:  # click consumes the list it parses: a copy each time
        return config_from_options(serve.make_context("serve", server["args"][1:]).params)

    opt_out = serve_variable("allow_unauthenticated_remote")
    (key,) = [e for e in server["env"] if e["name"] == serve_variable("api_key")]
    assert key["valueFrom"]["secretKeyRef"]["optional"] is True  # so the opt-out is needed
    assert config().host == "0.0.0.0" and config().api_keys == ()
    monkeypatch.setenv(key["name"], "from-the-secret")
    assert config().api_keys == ("from-the-secret",)
    # Without the ConfigMap's opt-out, only a pod with a key starts.
    monkeypatch.delenv(opt_out)
    assert config().api_keys == ("from-the-secret",)
    monkeypatch.delenv(key["name"])
    with pytest.raises(ValueError, match="reachable from other machines"):
        config()


def test_every_variable_set_is_one_the_server_reads(
    server: dict[str, Any], config_env: dict[str, str]
) -> None:
    names = set(config_env) | {e["name"] for e in server.get("env", [])}
    names |= {n for n in dockerfile_env(dockerfile_stages()[-1]) if n.startswith("HANDSPRING_")}
    unknown = {n for n in names if n.startswith("HANDSPRING_")}
    unknown -= serve_variables() | NON_FLAG_VARIABLES
    assert not unknown, f"not read by handspring serve: {sorted(unknown)}"


def test_ports_line_up(docs: dict[str, dict[str, Any]], server: dict[str, Any]) -> None:
    served = int(server["args"][server["args"].index("--port") + 1])
    (port,) = server["ports"]
    assert port["containerPort"] == served
    (service_port,) = docs["Service"]["spec"]["ports"]
    assert container_port(server, service_port["targetPort"]) == served
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container_port(server, server[probe]["httpGet"]["port"]) == served
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == served
    assert int(one(dockerfile_stages()[-1], "EXPOSE")) == served


def test_the_service_and_deployment_select_the_pods(docs: dict[str, dict[str, Any]]) -> None:
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_hpa_scales_the_deployment(
    docs: dict[str, dict[str, Any]], server: dict[str, Any]
) -> None:
    hpa, deployment = docs["HorizontalPodAutoscaler"], docs["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in server["resources"]["requests"]  # utilisation is relative to it
    assert "replicas" not in deployment["spec"]  # else every apply resets the HPA's count


def test_the_model_volume_is_mounted_read_only(
    pod: dict[str, Any], config_env: dict[str, str]
) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"] + pod["initContainers"]:
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        for model in config_env[serve_variable("models")].split():
            source = ModelSpec.parse(model, "int8").source
            (path,) = [p for p in mounts if source.startswith(p.rstrip("/") + "/")]
            assert mounts[path].get("readOnly") is True
            claim = volumes[mounts[path]["name"]]["persistentVolumeClaim"]
            assert claim["readOnly"] is True
        for mount in mounts.values():  # anything writable is scratch space, not the model
            if not mount.get("readOnly"):
                assert "emptyDir" in volumes[mount["name"]], mount


def test_the_graph_cache_is_a_writable_scratch_volume(pod: dict[str, Any]) -> None:
    cache = dockerfile_env(dockerfile_stages()[-1])["HANDSPRING_CACHE"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    used = set()
    for container in pod["containers"] + pod["initContainers"]:
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == cache]
        assert not mount.get("readOnly")
        assert "emptyDir" in volumes[mount["name"]]
        used.add(mount["name"])
    assert len(used) == 1  # one volume, so the server finds what the init container built


def test_pods_run_as_the_images_non_root_user(pod: dict[str, Any]) -> None:
    user = one(dockerfile_stages()[-1], "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can check it
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == int(uid)
    assert context["runAsGroup"] == int(gid or uid)
    for container in pod["containers"] + pod["initContainers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]


def test_memory_is_sized_from_the_measurements(
    server: dict[str, Any], builder: dict[str, Any]
) -> None:
    requests, limits = server["resources"]["requests"], server["resources"]["limits"]
    assert mebibytes(requests["memory"]) >= SERVER_RSS_MIB
    assert mebibytes(limits["memory"]) >= SERVER_PEAK_MIB
    assert mebibytes(builder["resources"]["limits"]["memory"]) >= GRAPH_BUILD_PEAK_MIB
    # An init container's request counts in scheduling: keep it at the server's.
    assert mebibytes(builder["resources"]["requests"]["memory"]) <= mebibytes(requests["memory"])


def test_shutdown_has_time_to_finish_requests(pod: dict[str, Any], server: dict[str, Any]) -> None:
    graceful = serve.make_context("serve", list(server["args"][1:])).params["graceful_timeout"]
    command = server["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(command[1]) if command[0] == "sleep" else 0.0
    assert pod["terminationGracePeriodSeconds"] >= graceful + pause


# --------------------------------------------------------------- Dockerfile


def test_the_image_is_slim_and_carries_no_model() -> None:
    stages = dockerfile_stages()
    assert all(rest.split()[0] == "python:3.11-slim" for w, rest in (s[0] for s in stages))
    for stage in stages:
        assert not [rest for word, rest in stage if word == "ADD"]  # ADD fetches URLs, unpacks
        for word, rest in stage:
            if word != "COPY" or rest.startswith("--from="):
                continue
            *sources, _ = shlex.split(rest)
            assert set(sources) <= {"pyproject.toml", "README.md", "src"}, rest
            assert not [s for s in sources if s.endswith(MODEL_SUFFIXES)]
    env = dockerfile_env(stages[-1])
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"].startswith("/models")


def test_the_images_command_is_a_serve_command_that_listens_outside() -> None:
    final = dockerfile_stages()[-1]
    entrypoint = json.loads(one(final, "ENTRYPOINT"))
    command = json.loads(one(final, "CMD"))  # exec form: signals reach the server
    assert entrypoint == ["handspring"]
    assert command[0] == "serve"
    params = serve.make_context("serve", command[1:]).params
    assert params["host"] == "0.0.0.0"
    assert params["port"] == int(one(final, "EXPOSE"))


def test_the_image_starts_only_with_a_key_or_the_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    final = dockerfile_stages()[-1]
    assert serve_variable("allow_unauthenticated_remote") not in dockerfile_env(final)
    command = json.loads(one(final, "CMD"))

    def config() -> ServerConfig:  # click consumes the list it parses: a copy each time
        return config_from_options(serve.make_context("serve", command[1:]).params)

    for name in [n for n in os.environ if n.startswith("HANDSPRING_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ValueError, match="HANDSPRING_API_KEY"):  # `docker run` with neither
        config()
    # The two ways the Dockerfile's own comment gives.
    monkeypatch.setenv(serve_variable("api_key"), "k")
    assert config().api_keys == ("k",)
    monkeypatch.delenv(serve_variable("api_key"))
    monkeypatch.setenv(serve_variable("allow_unauthenticated_remote"), "1")
    assert config().host == "0.0.0.0" and config().api_keys == ()
    text = DOCKERFILE.read_text()
    assert "HANDSPRING_API_KEY=" in text and "HANDSPRING_ALLOW_UNAUTHENTICATED_REMOTE=1" in text


def test_the_build_context_holds_no_model_files() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything out, then only what the build copies back in
    assert {r for r in rules if r.startswith("!")} == {"!pyproject.toml", "!README.md", "!src/"}
    for path in (ROOT / "src").rglob("*"):
        if path.is_file():
            assert not path.name.endswith(MODEL_SUFFIXES), path
            assert path.stat().st_size < 5 * 2**20, path


# ------------------------------------------------- probes on a real server


def _get(url: str, path: str) -> httpx.Response:
    return httpx.get(url + path, timeout=10)  # no Authorization: probes send none


def _wait_ready(url: str, path: str) -> httpx.Response:
    deadline = time.monotonic() + 60
    while (response := _get(url, path)).status_code != 204 and time.monotonic() < deadline:
        time.sleep(0.1)
    return response


@pytest.fixture(scope="module")
def keyed_server(tiny_hf: Path, server: dict[str, Any]) -> Iterator[str]:
    """The deployment's settings on the tiny model, with an API key, as with the Secret."""
    params = serve.make_context("serve", list(server["args"][1:])).params
    config = ServerConfig(
        models=(ModelSpec("clip", str(tiny_hf), "int8"),),
        preload=params["preload"],
        api_keys=("k",),
    )
    with running(create_app(config)) as url:
        yield url


def test_the_probe_paths_answer_on_a_real_server(
    keyed_server: str, server: dict[str, Any], docs: dict[str, dict[str, Any]]
) -> None:
    readiness = server["readinessProbe"]["httpGet"]["path"]
    assert _wait_ready(keyed_server, readiness).status_code == 204
    for probe in ("startupProbe", "livenessProbe"):
        assert _get(keyed_server, server[probe]["httpGet"]["path"]).status_code == 204
    annotations = docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    metrics = _get(keyed_server, annotations["prometheus.io/path"])
    assert metrics.status_code == 200 and "handspring_requests_total" in metrics.text
    # The key is on: only the probe and metrics routes are open without it.
    assert httpx.post(keyed_server + "/v1/embed", data={"query": "cat"}).status_code == 401


def test_readiness_fails_and_liveness_holds_while_the_model_is_missing(
    tmp_path: Path, server: dict[str, Any]
) -> None:
    config = ServerConfig(models=(ModelSpec("clip", str(tmp_path / "not-mounted"), "int8"),))
    with running(create_app(config)) as url:
        # Taken out of the Service, but not restarted: mounting the volume fixes it.
        assert _get(url, server["readinessProbe"]["httpGet"]["path"]).status_code == 503
        assert _get(url, server["livenessProbe"]["httpGet"]["path"]).status_code == 204


def test_the_init_container_builds_the_graphs_the_server_then_reads(
    tiny_hf: Path,
    tmp_path: Path,
    builder: dict[str, Any],
    server: dict[str, Any],
    config_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    python, flag, script = builder["command"]
    assert (python, flag) == ("python", "-c")
    cache = tmp_path / "cache"
    env = dict(os.environ, HANDSPRING_CACHE=str(cache))
    env |= config_env | {serve_variable("models"): f"clip={tiny_hf}"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    built = sorted((cache / "graphs").iterdir())
    assert len(built) == 2  # the image tower and the text tower

    monkeypatch.setenv("HANDSPRING_CACHE", str(cache))
    params = serve.make_context("serve", list(server["args"][1:])).params
    precision = config_env["HANDSPRING_PRECISION"]
    config = ServerConfig(
        models=(ModelSpec("clip", str(tiny_hf), precision),),
        preload=params["preload"],
        threads=int(config_env["HANDSPRING_THREADS"]),
    )
    with running(create_app(config)) as url:
        assert _wait_ready(url, "/.well-known/ready").status_code == 204
        assert httpx.post(url + "/v1/embed", data={"query": "a cat"}).status_code == 200
    assert sorted((cache / "graphs").iterdir()) == built  # nothing rebuilt at start


# --------------------------------------------------------------------- docs


def test_the_server_docs_name_every_flag_and_variable() -> None:
    text = (ROOT / "docs" / "server.md").read_text()
    for param in serve.params:
        assert f"`{param.opts[0]}`" in text, param.opts[0]
        assert f"`{param.envvar}`" in text, param.envvar
