"""Read the deployment files as the tools that use them would.

Docker, compose and Kubernetes cannot run here, so the tests read what they
would read: the Dockerfile's instructions, ``.dockerignore``, and every YAML
document under ``deploy/``. Only the parts of each format that the project's
files use are understood; anything else fails loudly rather than passing.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from consumer.settings import ENVIRONMENT, KAFKA_PASSTHROUGH_PREFIX

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
#: The name that marks the project's own image in compose and Kubernetes.
IMAGE_NAME = "crisp-lifecycle"

SETTING_VARIABLES = frozenset(variable for variable, _ in ENVIRONMENT.values())


def unknown_variables(names: Iterable[str]) -> list[str]:
    """Return the names that no setting of the service reads."""
    return sorted(
        name
        for name in names
        if name not in SETTING_VARIABLES
        and not name.startswith(KAFKA_PASSTHROUGH_PREFIX)
    )


# -- YAML ------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    """Return every YAML file under deploy/, sorted."""
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def yaml_documents(path: Path) -> list[Any]:
    """Return the documents of a (possibly multi-document) YAML file."""
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    """Return every Kubernetes object under deploy/k8s (not kustomization)."""
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml_documents(path):
            if doc.get("kind") != "Kustomization":
                objects.append(doc)
    return objects


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    """Return the one object of a kind (and name); fail if not exactly one."""
    found = [
        obj
        for obj in k8s_objects()
        if obj["kind"] == kind and name in {None, obj["metadata"]["name"]}
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def compose() -> dict[str, Any]:
    """Return the compose file as data."""
    documents = yaml_documents(COMPOSE)
    assert len(documents) == 1, "compose.yaml must hold one document"
    data: dict[str, Any] = documents[0]
    return data


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """Return a compose service's environment as strings (map or list form)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {key: value for key, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def is_project_image(image: str | None) -> bool:
    """Tell the project's image from Kafka's, Redis' or the registry's."""
    if not image:
        return False
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return name == IMAGE_NAME


def container_environment(container: Mapping[str, Any]) -> dict[str, str]:
    """Return a container's environment, resolving envFrom and valueFrom.

    Values of Secrets and ConfigMaps are read from the manifests themselves,
    so a reference to an object that deploy/k8s does not define fails.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = k8s_object("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            secret = k8s_object("Secret", source["secretRef"]["name"])
            data = secret.get("stringData") or secret.get("data") or {}
        prefix = source.get("prefix", "")
        env.update({prefix + key: str(value) for key, value in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            obj = k8s_object("ConfigMap", key_ref["name"])
            env[item["name"]] = str(obj["data"][key_ref["key"]])
        elif "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            obj = k8s_object("Secret", key_ref["name"])
            data = obj.get("stringData") or obj.get("data") or {}
            env[item["name"]] = str(data[key_ref["key"]])
        else:
            raise AssertionError(f"unsupported valueFrom in {item['name']}: {ref}")
    return env


# -- Dockerfile -----------------------------------------------------------------


@dataclass
class Instruction:
    """One Dockerfile instruction with its arguments, continuations joined."""

    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """Return the JSON (exec) form's list; fail on the shell form."""
        assert self.arguments.startswith("["), (
            f"{self.keyword} must use the exec form, not {self.arguments!r}"
        )
        value = json.loads(self.arguments)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


@dataclass
class Stage:
    """One build stage: its base image and instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Return every instruction of a keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        """Return the instruction of a keyword that takes effect (the last)."""
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]

    def environment(self) -> dict[str, str]:
        """Return the variables that ENV sets (``KEY=VALUE`` form)."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.arguments):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {instruction.arguments!r}: use KEY=VALUE"
                env[key] = value
        return env


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, lines joined)."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        if not text:
            continue
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """Return the build stages, with ``ARG`` defaults substituted in FROM."""
    build_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(path):
        if instruction.keyword == "ARG" and not stages:
            key, _, value = instruction.arguments.partition("=")
            build_args[key] = value
            continue
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: build_args[m.group(1) or m.group(2)],
                words[0],
            )
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
            continue
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].instructions.append(instruction)
    return stages


def healthcheck_command(stage: Stage) -> list[str]:
    """Return the command of the stage's HEALTHCHECK (options stripped)."""
    arguments = stage.last("HEALTHCHECK").arguments
    options, sep, command = arguments.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {arguments!r}"
    assert all(word.startswith("--") for word in options.split()), options
    return Instruction("CMD", command.strip()).exec_form()


def copy_sources(stage: Stage) -> Iterator[str]:
    """Yield the build-context paths that the stage's COPY instructions read."""
    for instruction in stage.all("COPY") + stage.all("ADD"):
        words = instruction.arguments.split()
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        yield from paths[:-1]


def dockerignore_excludes(relative: str, path: Path = REPO / ".dockerignore") -> bool:
    """Return True when .dockerignore keeps a path out of the build context.

    The last matching pattern wins and ``!`` re-includes, as Docker does; a
    pattern also matches everything below a matched directory.
    """
    excluded = False
    relative = relative.strip("/")
    for line in path.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(_docker_match(prefix, pattern) for prefix in prefixes):
            excluded = not negate
    return excluded


def _docker_match(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        parts = path.split("/")
        return any(
            fnmatch.fnmatchcase("/".join(parts[i:]), tail) for i in range(len(parts))
        )
    return fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")
