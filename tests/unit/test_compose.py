"""compose.yaml and the images of deploy/: valid against the compose specification, and true to the
services they run. There is no Docker engine on the test machines, so this checks everything that can
be checked without one: the schema, what the schema cannot see (dependencies, health checks, graceful
stop, scaling, mounts, secrets) and that each service's configuration loads with the environment
compose gives it."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from shared.bus.client import create_broker
from shared.node import SERVICES
from shared.settings import WORKER_SERVICES, NodeSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
ENV_EXAMPLE = REPO / "deploy" / "compose.env.example"
DOCKERIGNORE = REPO / ".dockerignore"

#: The compose service names others build on (Prometheus targets, README, operators' scripts).
NODE_SERVICES = SERVICES  # gateway and the four workers
INFRASTRUCTURE = ("rabbitmq", "redis", "prometheus", "grafana")
MONITORING_TOKEN_ENV = "OICP_P2P_INTERNAL__MONITORING_TOKEN"
MONITORING_SECRET = "monitoring_token"

#: After FastStream's graceful timeout (read from the broker below) a service still cancels its
#: delivery lanes and closes Redis, the peers' HTTP client and the broker connection; the gateway's
#: uvicorn gives open requests 5 s (services/gateway/__main__.py). Together: the 10-15 s of a stop.
SHUTDOWN_HOOKS_SECONDS = 5.0
#: stop_grace_period must exceed the shutdown by this factor: a loaded host stops more slowly.
GRACE_MARGIN = 1.5


# ---- compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR:?error}, ...) ----------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


@dataclass(frozen=True)
class Reference:
    name: str
    op: str  # "", "-", ":-", "?", ":?", "+", ":+"
    arg: str


class MissingVariable(Exception):
    pass


def _references_in(text: str) -> Iterator[Reference]:
    for match in _VARIABLE.finditer(text):
        if match["escaped"]:
            continue
        if match["named"]:
            yield Reference(match["named"], "", "")
            continue
        braced = _BRACED.fullmatch(match["braced"])
        assert braced, f"interpolation compose does not know: ${{{match['braced']}}}"
        yield Reference(braced["name"], braced["op"] or "", braced["arg"] or "")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        (ref,) = _references_in(match[0])
        value = env.get(ref.name)
        present = value is not None and (value != "" or not ref.op.startswith(":"))
        if ref.op.endswith("-"):
            return value if present and value is not None else ref.arg
        if ref.op.endswith("?"):
            if not present or value is None:
                raise MissingVariable(f"{ref.name}: {ref.arg}")
            return value
        if ref.op.endswith("+"):
            return ref.arg if present else ""
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def example_env() -> dict[str, str]:
    """deploy/compose.env.example as a mapping (KEY=VALUE lines)."""
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"compose.env.example: {line!r} is not KEY=VALUE"
            env[key.strip()] = value.strip()
    return env


def dummy_env() -> dict[str, str]:
    """The example's values with every empty secret filled in (distinct values: a mix-up shows)."""
    return {key: value or f"test-{key.lower().replace('_', '-')}" for key, value in example_env().items()}


@cache
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose() -> dict[str, Any]:
    """compose.yaml as compose sees it after interpolation with the dummy environment."""
    return _walk(copy.deepcopy(raw_compose()), dummy_env())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def seconds(duration: str) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ---- Dockerfiles ----------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {args!r}: use the KEY=VALUE form"
                env[key] = value
        return env


@cache
def dockerfile(path: Path) -> tuple[Stage, ...]:
    """The stages of a Dockerfile: instructions with continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        part = stripped.removesuffix("\\").strip()
        pending = f"{pending} {part}" if pending else part
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    stages: list[Stage] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return tuple(stages)


def dockerfile_of(service: Mapping[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return REPO / build / "Dockerfile"
    return REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and value and all(isinstance(v, str) for v in value) else None


def image_healthcheck(path: Path) -> str | None:
    """The HEALTHCHECK of the image's final stage, or None (also for ``HEALTHCHECK NONE``)."""
    check = dockerfile(path)[-1].last("HEALTHCHECK")
    return None if check is None or check.upper() == "NONE" else check


def built_services() -> dict[str, Path]:
    return {name: path for name, spec in services().items() if (path := dockerfile_of(spec)) is not None}


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    patterns = [line.rstrip("/") for line in lines if line and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "re-included paths make this check unreliable"
    return patterns


def ignored(path: str) -> bool:
    """Whether the build context leaves out ``path`` (relative to the repository), itself or a parent."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in dockerignore_patterns())


# ---- the schema -----------------------------------------------------------------------------------


@cache
def compose_validator() -> jsonschema.protocols.Validator:
    """The compose specification's JSON schema as check-jsonschema vendors it (never copied here)."""
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(document: Any) -> list[str]:
    errors = sorted(compose_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "gateway", "restrat"), "always"),  # a misspelled key
        (("services", "redis", "healthcheck", "tset"), ["CMD", "true"]),
        (("services", "cdr", "stop_grace_period"), 30),  # a number where compose wants a duration
        (("services", "sessions", "depends_on"), "redis"),
    ],
)
def test_the_schema_check_rejects_a_broken_file(path: tuple[str, ...], value: Any) -> None:
    document = compose()
    *parents, key = path
    node = document
    for parent in parents:
        node = node[parent]
    node[key] = value
    assert schema_errors(document), f"the schema accepted {'.'.join(path)} = {value!r}"


# ---- services, dependencies, health checks, restarts, stops ---------------------------------------


def test_compose_runs_the_contracted_services() -> None:
    assert set(services()) == {*INFRASTRUCTURE, *NODE_SERVICES}


def test_each_node_service_runs_its_module_from_its_image() -> None:
    for name in NODE_SERVICES:
        service = services()[name]
        assert service["command"] == ["python", "-m", f"services.{name}"], name
        assert find_spec(f"services.{name}.__main__") is not None, name
        family = "gateway" if name == "gateway" else "worker"
        assert dockerfile_of(service) == REPO / "deploy" / f"{family}.Dockerfile", name
    images = {services()[name]["image"] for name in WORKER_SERVICES}
    assert len(images) == 1, f"the four workers share one image, not {images}"
    assert services()["gateway"]["image"] not in images


def test_dependencies_exist_and_wait_for_health_where_they_say_so() -> None:
    for name, service in services().items():
        for target, condition in depends_on(service).items():
            assert target in services(), f"{name} depends on {target}, which is not a service"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                target_spec = services()[target]
                check = target_spec.get("healthcheck")
                image = dockerfile_of(target_spec)
                has_check = (check and not check.get("disable") and check.get("test")) or (
                    image is not None and image_healthcheck(image)
                )
                assert has_check, f"{name} waits for {target} to be healthy, but {target} has no health check"


def test_node_services_wait_for_the_broker_and_redis_and_not_for_each_other() -> None:
    for name in NODE_SERVICES:
        deps = depends_on(services()[name])
        assert deps == {"rabbitmq": "service_healthy", "redis": "service_healthy"}, name
    assert depends_on(services()["prometheus"]).get("gateway") == "service_healthy"
    assert depends_on(services()["grafana"]).get("prometheus") == "service_healthy"


def test_every_service_has_a_health_check_and_a_restart_policy() -> None:
    for name, service in services().items():
        check = service.get("healthcheck")
        if check is not None:
            assert not check.get("disable"), name
            test = check.get("test")
            assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        else:
            path = dockerfile_of(service)
            assert path is not None and image_healthcheck(path), f"{name} has no health check"
        assert service.get("restart") in ("always", "unless-stopped") or str(service.get("restart")).startswith(
            "on-failure"
        ), f"{name} has no restart policy"


def shutdown_seconds() -> float:
    """How long a node service takes to stop after SIGTERM: FastStream's graceful timeout as the code
    configures it, plus the shutdown hooks."""
    broker = create_broker(compose_settings("cdr"), "cdr")
    graceful = broker.config.graceful_timeout
    assert isinstance(graceful, float | int) and graceful > 0, "the broker has no graceful timeout"
    return float(graceful) + SHUTDOWN_HOOKS_SECONDS


def test_node_services_get_time_to_stop_gracefully() -> None:
    bound = shutdown_seconds()
    assert 10 <= bound <= 30, bound
    for name in NODE_SERVICES:
        grace = services()[name].get("stop_grace_period")
        assert grace is not None, f"{name} has no stop_grace_period (Docker's 10 s would cut the shutdown)"
        assert seconds(grace) >= GRACE_MARGIN * bound, f"{name}: {grace} is too short for a {bound} s shutdown"
    for name in INFRASTRUCTURE:
        assert "stop_grace_period" in services()[name], name


def test_images_stop_with_sigterm() -> None:
    for name, path in built_services().items():
        assert dockerfile(path)[-1].last("STOPSIGNAL") == "SIGTERM", name
        assert services()[name].get("stop_signal", "SIGTERM") == "SIGTERM", name


def test_workers_can_be_scaled() -> None:
    """``docker compose up --scale evse_push=3``: no fixed container name, no host port to clash."""
    for name in WORKER_SERVICES:
        service = services()[name]
        assert "container_name" not in service, name
        assert not service.get("ports"), name
        assert "scale" not in service and "replicas" not in (service.get("deploy") or {}), name


# ---- mounts, volumes, images ----------------------------------------------------------------------


def mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            source, _, rest = entry.partition(":")
            target = rest.split(":")[0]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            yield kind, source, target
        else:
            yield entry.get("type", "volume"), entry.get("source", ""), entry["target"]


def test_bind_mounts_exist_in_the_repository() -> None:
    """A missing host path would silently become an empty directory in the container."""
    checked = 0
    for name, service in services().items():
        for kind, source, target in mounts(service):
            if kind != "bind":
                continue
            assert source.startswith("./"), f"{name}: bind mount {source} is not relative to the repository"
            relative = source.removeprefix("./").rstrip("/")
            assert (REPO / relative).exists(), f"{name}: {source} (mounted at {target}) does not exist"
            checked += 1
    assert checked == 5  # RabbitMQ's two files, Prometheus' directory, Grafana's two


def test_named_volumes_are_declared_and_keep_the_state() -> None:
    declared = set(compose().get("volumes") or {})
    used: dict[str, set[str]] = {}
    for name, service in services().items():
        for kind, source, target in mounts(service):
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared at the top level"
                used.setdefault(name, set()).add(target)
    assert "/var/lib/rabbitmq" in used["rabbitmq"]
    assert "/data" in used["redis"]
    assert "/prometheus" in used["prometheus"]
    assert "/var/lib/grafana" in used["grafana"]


def test_prometheus_and_grafana_read_their_mounted_configuration() -> None:
    prometheus = services()["prometheus"]
    args = prometheus["command"]
    config = next(a.partition("=")[2] for a in args if a.startswith("--config.file="))
    assert "--web.enable-lifecycle" in args and "--storage.tsdb.path=/prometheus" in args
    binds = {target: source for kind, source, target in mounts(prometheus) if kind == "bind"}
    assert binds.get("/etc/prometheus") == "./deploy/prometheus" and config.startswith("/etc/prometheus/")
    grafana_binds = {target: source for kind, source, target in mounts(services()["grafana"]) if kind == "bind"}
    assert grafana_binds.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning"
    assert grafana_binds.get("/var/lib/grafana/dashboards") == "./deploy/grafana/dashboards"
    prometheus_yml = REPO / "deploy" / "prometheus" / config.removeprefix("/etc/prometheus/")
    assert prometheus_yml.is_file()
    assert f"/run/secrets/{MONITORING_SECRET}" in prometheus_yml.read_text()


def test_infrastructure_images_are_pinned_and_configured() -> None:
    for name in INFRASTRUCTURE:
        image = services()[name]["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, f"{name}: image {image} is not pinned"
    assert services()["rabbitmq"]["image"].endswith("-management")
    assert services()["rabbitmq"].get("hostname"), "the broker's node name (and data directory) needs a fixed hostname"
    command = services()["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_rabbitmq_enables_management_and_prometheus() -> None:
    text = (REPO / "deploy" / "rabbitmq" / "enabled_plugins").read_text()
    match = re.fullmatch(r"\s*\[([a-z_,\s]*)\]\.\s*", text)
    assert match, "enabled_plugins must be one Erlang list term: [plugin_a,plugin_b]."
    plugins = {p.strip() for p in match[1].split(",") if p.strip()}
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= plugins
    for line in (REPO / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-z0-9_.]+ = \S+", line), f"rabbitmq.conf: {line!r} is not 'key = value'"


# ---- the images -----------------------------------------------------------------------------------


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION\s*:=\s*(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match
    return match[1]


@pytest.mark.parametrize("family", ["gateway", "worker"])
def test_dockerfile_builds_a_slim_non_root_single_process_image(family: str) -> None:
    path = REPO / "deploy" / f"{family}.Dockerfile"
    assert path in built_services().values()
    stages = dockerfile(path)
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        if stage.base in names:
            continue
        assert "$" not in stage.base, f"{stage.base}: a base image from a build argument is not checked"
        repository, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert repository and tag and tag != "latest", f"{path.name}: base image {stage.base} is not pinned"
    builder, runtime = stages[0], stages[-1]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    assert runtime.base == "python:3.11-slim"
    # the builder installs the locked dependencies with the Makefile's uv
    runs = " ".join(builder.all("RUN"))
    assert f"uv=={makefile_uv_version()}" in runs
    assert re.search(r"uv sync --frozen --no-dev\b", runs)
    assert "uv" not in " ".join(runtime.all("RUN")), "uv stays in the builder"
    # non-root, with a fixed uid
    user = runtime.last("USER")
    assert user is not None, "the image runs as root"
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit() and int(uid) >= 1000, f"USER {user}: a fixed non-root uid"
    env = runtime.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1" and env.get("PYTHONUNBUFFERED") == "1"
    # one process that gets the signal itself: exec form, no shell
    cmd = runtime.last("CMD")
    assert cmd is not None and exec_form(cmd) is not None, f"CMD {cmd}: use the exec form"
    assert runtime.last("ENTRYPOINT") is None or exec_form(runtime.last("ENTRYPOINT") or "") is not None
    check = image_healthcheck(path)
    assert check is not None and "CMD [" in check, "HEALTHCHECK in exec form"
    assert exec_form(check[check.index("CMD") + 3 :].strip()) is not None


def test_build_context_has_what_the_images_copy_and_nothing_secret() -> None:
    for path in set(built_services().values()):
        for stage in dockerfile(path):
            for args in stage.all("COPY") + stage.all("ADD"):
                words = args.split()
                if any(w.startswith("--from") for w in words):
                    continue
                for source in [w for w in words if not w.startswith("--")][:-1]:
                    assert (REPO / source).exists(), f"{path.name}: COPY {source} does not exist"
                    assert not ignored(source), f"{path.name}: COPY {source}, but .dockerignore leaves it out"
    for secret_or_bulk in (".git", ".venv", ".uv", ".env", "deploy/certs", "tests", "bench", ".pytest_cache"):
        assert ignored(secret_or_bulk), f".dockerignore does not leave out {secret_or_bulk}"


# ---- the configuration each service gets ----------------------------------------------------------


def config_in_repo(dockerfile_path: Path, container_path: str) -> Path:
    """The repository file that the image holds at ``container_path`` (COPY into WORKDIR)."""
    runtime = dockerfile(dockerfile_path)[-1]
    workdir = PurePosixPath("/")
    for keyword, args in runtime.instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, destination = [w for w in args.split() if not w.startswith("--")]
            target = workdir / destination
            if len(sources) == 1 and PurePosixPath(container_path).is_relative_to(target):
                return REPO / sources[0] / PurePosixPath(container_path).relative_to(target)
    raise AssertionError(f"{dockerfile_path.name} does not copy {container_path} into the image")


def compose_settings(name: str) -> NodeSettings:
    """The settings of service ``name`` as its container loads them: the image's file named by
    OICP_P2P_CONFIG and the environment compose sets (nothing from this test process)."""
    service = services()[name]
    env = environment_of(service)
    path = dockerfile_of(service)
    assert path is not None
    config = config_in_repo(path, env["OICP_P2P_CONFIG"])
    saved = {key: value for key, value in os.environ.items() if key.startswith("OICP_P2P_")}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update(env)
        return load_settings(config)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


@pytest.mark.parametrize("name", NODE_SERVICES)
def test_each_service_loads_its_configuration_with_the_compose_environment(name: str) -> None:
    dummies = dummy_env()
    settings = compose_settings(name)
    assert settings.internal.token.get_secret_value() == dummies["OICP_P2P_INTERNAL_TOKEN"]
    assert settings.internal.monitoring_token is not None
    assert settings.internal.monitoring_token.get_secret_value() == dummies["OICP_P2P_MONITORING_TOKEN"]
    rabbitmq, redis = urlsplit(settings.rabbitmq.url), urlsplit(settings.redis.url)
    assert rabbitmq.hostname == "rabbitmq" and redis.hostname == "redis"
    assert (rabbitmq.username, rabbitmq.password) == (dummies["RABBITMQ_USER"], dummies["RABBITMQ_PASSWORD"])
    # reachable from the other containers
    assert settings.oicp.host == settings.internal.host == settings.metrics.host == "0.0.0.0"


def test_health_checks_and_published_ports_match_the_configuration() -> None:
    for name, path in built_services().items():
        settings = compose_settings(name)
        url = urlsplit(dockerfile(path)[-1].env()["HEALTHZ_URL"])
        assert url.hostname == "127.0.0.1" and url.path == "/healthz", name
        expected = settings.internal.port if name == "gateway" else settings.metrics.port_of(name)
        assert url.port == expected, f"{name}: the health check asks port {url.port}, the service listens on {expected}"
    gateway = compose_settings("gateway")
    published = {int(str(p).rsplit(":", 1)[-1]) for p in services()["gateway"]["ports"]}
    assert published == {gateway.oicp.port, gateway.internal.port}


# ---- secrets ----------------------------------------------------------------------------------------


def references() -> list[Reference]:
    return [ref for text in _strings(raw_compose()) for ref in _references_in(text)]


def test_secrets_are_declared_and_the_monitoring_token_reaches_nodes_and_prometheus() -> None:
    declared = compose().get("secrets") or {}
    for name, service in services().items():
        for entry in service.get("secrets") or []:
            source = entry if isinstance(entry, str) else entry["source"]
            assert source in declared, f"{name} uses secret {source}, which is not declared"
    assert MONITORING_SECRET in (services()["prometheus"].get("secrets") or [])
    variable = declared[MONITORING_SECRET].get("environment")
    assert variable, f"secret {MONITORING_SECRET} must come from an environment variable"
    for name in NODE_SERVICES:
        raw = raw_compose()["services"][name]["environment"][MONITORING_TOKEN_ENV]
        assert [ref.name for ref in _references_in(raw)] == [variable], name


def test_no_secret_has_a_default() -> None:
    """A missing secret stops compose with its message (${VAR:?...}); it never runs on a default."""
    secret = re.compile(r"TOKEN|PASSWORD|PASS$|SECRET")
    refs = references()
    assert refs
    for ref in refs:
        if secret.search(ref.name):
            assert ref.op == ":?" and ref.arg.strip(), f"${{{ref.name}{ref.op}...}}: use ${{{ref.name}:?message}}"
    for name, service in raw_compose()["services"].items():
        for key, value in environment_of(service).items():
            if secret.search(key):
                assert "${" in value, f"{name}: {key} is written into compose.yaml"
    with pytest.raises(MissingVariable, match="OICP_P2P_INTERNAL_TOKEN"):
        _walk(raw_compose(), {k: v for k, v in dummy_env().items() if k != "OICP_P2P_INTERNAL_TOKEN"})


def test_env_example_documents_exactly_the_variables_compose_reads() -> None:
    example = example_env()
    assert {ref.name for ref in references()} == set(example)
    for ref in references():
        if ref.op == ":?":
            # copied as is, the example does not start: no secret from a public file ends up in use
            assert example[ref.name] == "", f"compose.env.example: {ref.name} must be left empty"
