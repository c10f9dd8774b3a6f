"""The Docker files agree with the code they deploy.

scripts/compose-smoke.sh builds and runs the images (CI runs it where a Docker engine can be started);
scripts/ci-deploy-checks.sh lints and validates the files. What can drift silently is checked here, in
seconds and without an engine: every program, flag, ``SGAN_*`` name, port, path, health check and pinned
version in the Dockerfile, .dockerignore, docker-compose.yml, requirements.lock, the smoke script and the
README's "Deploy with Docker" commands is compared with what the code declares (pyproject's console
scripts and dependencies, the argparse parsers, ``Settings.model_fields``, the FastAPI routes, the
installed distributions), never with a copy of it written into this file.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.metadata
import io
import json
import os
import re
import shlex
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SMOKE_SCRIPT = ROOT / "scripts" / "compose-smoke.sh"
LOCK_FILE = ROOT / "requirements.lock"
README = ROOT / "README.md"
README_SECTION = "## Deploy with Docker"

# ---------------------------------------------------------------------------------------------------------
# What the code declares


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def console_scripts() -> dict[str, str]:
    return dict(pyproject()["project"]["scripts"])


def parser_for(program: str) -> argparse.ArgumentParser:
    """The argparse parser behind a console script, found through its pyproject entry point."""
    scripts = console_scripts()
    assert program in scripts, f"{program!r} is not a console script in pyproject.toml (have {sorted(scripts)})"
    module_name = scripts[program].split(":")[0]
    module = importlib.import_module(module_name)
    assert hasattr(module, "build_parser"), f"{module_name} (behind {program}) has no build_parser()"
    return module.build_parser()


def parse_cli(program: str, args: list[str], where: str) -> argparse.Namespace | None:
    """Parse ``args`` with ``program``'s real parser; None for --help; a failure names the file and the flags."""
    parser = parser_for(program)
    parser.allow_abbrev = False  # the files spell flags out: an abbreviation breaks when a longer flag is added
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(args)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return None
        raise AssertionError(
            f"{where}: `{program} {shlex.join(args)}` does not parse with {program}'s parser: "
            f"{stderr.getvalue().strip()}"
        ) from None


def settings_class() -> type:
    from app.settings import Settings

    return Settings


def env_prefix() -> str:
    return settings_class().model_config["env_prefix"]


def server_variables() -> set[str]:
    """SGAN_* names the server reads: one per Settings field."""
    return {f"{env_prefix()}{name}".upper() for name in settings_class().model_fields}


def training_variables() -> set[str]:
    """SGAN_* names the training package reads: the string constants of that shape in its source."""
    pattern = re.compile(rf"^{re.escape(env_prefix())}[A-Z0-9_]+$")
    names = set()
    for source in (ROOT / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
                names.add(node.value)
    return names


def sgan_names_in(text: str) -> set[str]:
    return set(re.findall(rf"\b{re.escape(env_prefix())}[A-Z0-9_]+\b", text))


# ---------------------------------------------------------------------------------------------------------
# The Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


def dockerfile_stages() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order), continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction, arguments = instruction.upper(), arguments.strip()
        if instruction == "FROM":
            words = arguments.split()
            words = [word for word in words if not word.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            assert instruction == "ARG", f"Dockerfile: {instruction} before the first FROM"
            key, _, default = arguments.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((instruction, arguments))
    return global_args, stages


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    by_name = {stage.name: stage for stage in stages}
    chain = [by_name[name]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def exec_form(arguments: str, where: str) -> list[str]:
    if arguments.startswith("["):
        words = json.loads(arguments)
        assert all(isinstance(word, str) for word in words), f"{where}: {arguments}"
        return words
    return shlex.split(arguments)


def parse_env(arguments: str) -> dict[str, str]:
    words = shlex.split(arguments)
    if words and "=" not in words[0]:  # the legacy `ENV KEY value` form
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def effective(stages: list[Stage], name: str) -> dict[str, Any]:
    """What a container of this target gets: ENV, USER, CMD, ENTRYPOINT, EXPOSE, HEALTHCHECK, inherited."""
    result: dict[str, Any] = {
        "env": {},
        "user": "root",
        "cmd": None,
        "entrypoint": None,
        "expose": [],
        "healthcheck": None,
    }
    for stage in stage_chain(stages, name):
        for instruction, arguments in stage.instructions:
            if instruction == "ENV":
                result["env"].update(parse_env(arguments))
            elif instruction == "USER":
                result["user"] = arguments
            elif instruction == "CMD":
                result["cmd"] = exec_form(arguments, f"Dockerfile {stage.name} CMD")
            elif instruction == "ENTRYPOINT":
                result["entrypoint"] = exec_form(arguments, f"Dockerfile {stage.name} ENTRYPOINT")
            elif instruction == "EXPOSE":
                result["expose"] += [int(port.split("/")[0]) for port in arguments.split()]
            elif instruction == "HEALTHCHECK":
                result["healthcheck"] = arguments
    return result


def healthcheck_command(arguments: str) -> list[str]:
    options = [word for word in arguments.split() if word.startswith("--")]
    rest = arguments.split(None, len(options))[len(options)]
    assert rest.upper().startswith("CMD"), f"Dockerfile HEALTHCHECK has no CMD: {arguments}"
    return exec_form(rest[3:].strip(), "Dockerfile HEALTHCHECK")


# ---------------------------------------------------------------------------------------------------------
# .dockerignore, with Docker's rules: patterns are relative to the context root, `*` and `?` stay within a
# path segment, `**` spans segments, a pattern matching a directory also excludes everything under it, `!`
# lets a path back in, and the last matching line wins.


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
            continue
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", index)
            out += "[" + pattern[index + 1 : end].replace("\\", "\\\\") + "]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]  # the path and its parents
    ignored = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


# ---------------------------------------------------------------------------------------------------------
# docker-compose.yml


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def training_services() -> dict[str, dict[str, Any]]:
    """The services that run the train target: `train` (CPU) and `train-gpu`."""
    services = compose()["services"]
    return {
        name: service for name, service in services.items() if (service.get("build") or {}).get("target") == "train"
    }


def reserved_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any, environment: dict[str, str] | None = None) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} substitution, by default in an empty environment."""
    environment = environment or {}
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, default = match["name"], match["op"], match["default"] or ""
        if name in environment and (environment[name] or op != ":-"):
            return environment[name]
        return default if op in (":-", "-") else ""

    return _INTERPOLATION.sub(substitute, value).replace("$$", "$")


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in interpolate(environment).items()}


@dataclass
class Mount:
    source: str
    target: str
    read_only: bool
    named: bool


def service_mounts(service: dict[str, Any], named_volumes: set[str]) -> list[Mount]:
    mounts = []
    for volume in interpolate(service.get("volumes") or []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
            read_only = bool(volume.get("read_only"))
        else:
            source, target, *options = volume.split(":")
            read_only = "ro" in (options[0].split(",") if options else [])
        mounts.append(Mount(source, target, read_only, source in named_volumes))
    return mounts


def under(path: str, mounts: list[Mount]) -> Mount | None:
    for mount in mounts:
        if (
            PurePosixPath(path) == PurePosixPath(mount.target)
            or PurePosixPath(mount.target) in PurePosixPath(path).parents
        ):
            return mount
    return None


def duration_s(value: str | int | float) -> float:
    """A compose duration (`1m30s`, `40s`, `500ms`) in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(number + unit for number, unit in parts) == value, f"not a compose duration: {value}"
    return sum(float(number) * units[unit] for number, unit in parts)


def container_command(service: dict[str, Any]) -> list[str] | None:
    command = service.get("command")
    if command is None:
        return None
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


# ---------------------------------------------------------------------------------------------------------
# The documented `docker compose` invocations (README section, smoke script)


def readme_section() -> str:
    text = README.read_text()
    assert README_SECTION in text, f"README.md has no {README_SECTION!r} section"
    section = text.split(README_SECTION, 1)[1]
    return re.split(r"^## ", section, flags=re.MULTILINE)[0]


def shell_lines(text: str) -> list[str]:
    """Logical shell lines (continuations joined) of a script, or of the ```bash blocks of markdown."""
    if "```" in text:
        text = "\n".join(re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.DOTALL))
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


@dataclass
class ComposeRun:
    where: str
    profiles: list[str]
    service: str
    command: list[str]


_RUN_FLAGS = {"--rm", "-d", "--detach", "--service-ports", "--no-deps", "-T", "--no-TTY", "--build", "-i", "-t"}
_RUN_OPTIONS = {"-e", "--env", "-v", "--volume", "-u", "--user", "-w", "--workdir", "--name", "--entrypoint", "-p"}
_GLOBAL_OPTIONS = {"-f", "--file", "-p", "--project-name", "--project-directory", "--env-file", "--profile"}


def compose_runs(text: str, where: str) -> list[ComposeRun]:
    """Every `docker compose [...] run [...] SERVICE COMMAND...` (or the smoke script's `compose` helper)."""
    runs = []
    for line in shell_lines(text):
        if "compose" not in line:
            continue
        words = shlex.split(line, comments=True)
        for separator in ("&&", "||", ";", "|"):
            if separator in words:
                words = words[: words.index(separator)]
        words = [word for word in words if not re.match(r"^\d*[<>]", word)]  # 2>&1, >file: the shell's
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
            words = words[1:]
        if words[:2] == ["docker", "compose"]:
            words = words[2:]
        elif words[:1] == ["compose"] and where.endswith(".sh"):
            words = words[1:]
        else:
            continue
        profiles = []
        while words and words[0].startswith("-"):
            option = words.pop(0)
            name, _, inline = option.partition("=")
            assert name in _GLOBAL_OPTIONS, f"{where}: unknown docker compose option {option!r} in: {line}"
            value = inline or words.pop(0)
            if name == "--profile":
                profiles.append(value)
        if not words or words[0] != "run":
            continue
        words = words[1:]
        while words and words[0].startswith("-"):
            option = words.pop(0)
            name, _, inline = option.partition("=")
            if name in _RUN_OPTIONS:
                if not inline:
                    words.pop(0)
            else:
                assert name in _RUN_FLAGS, f"{where}: unknown `docker compose run` option {option!r} in: {line}"
        assert words, f"{where}: `docker compose run` without a service: {line}"
        runs.append(ComposeRun(where, profiles, words[0], words[1:]))
    return runs


def documented_runs() -> list[ComposeRun]:
    return compose_runs(readme_section(), "README.md") + compose_runs(SMOKE_SCRIPT.read_text(), str(SMOKE_SCRIPT.name))


# ---------------------------------------------------------------------------------------------------------
# The checks


def test_every_program_the_files_start_is_a_console_script_and_its_flags_parse() -> None:
    _, stages = dockerfile_stages()
    scripts = console_scripts()
    starts: list[tuple[str, list[str]]] = []
    for stage in stages:
        for arguments in stage.all("CMD"):
            starts.append((f"Dockerfile stage {stage.name} CMD", exec_form(arguments, stage.name)))
    for name, service in compose()["services"].items():
        command = container_command(service)
        if command:
            starts.append((f"docker-compose.yml service {name} command", command))
    for run in documented_runs():
        if run.command:
            starts.append((f"{run.where}: docker compose run {run.service}", run.command))
    assert starts
    unknown = []
    for where, words in starts:
        program, args = words[0], words[1:]
        if program in scripts:
            parse_cli(program, args, where)
        elif program not in {"cp", "ls", "cat"}:  # documented file handling inside the train container
            unknown.append(f"{where}: {program!r}")
    assert not unknown, f"programs that are not console scripts in pyproject.toml {sorted(scripts)}: {unknown}"


def test_the_default_image_serves_and_the_train_image_trains() -> None:
    _, stages = dockerfile_stages()
    scripts = console_scripts()
    final = stages[-1]
    serve = effective(stages, final.name)
    assert serve["cmd"] and serve["entrypoint"] is None, "the default (last) stage must start the server with CMD"
    assert scripts.get(serve["cmd"][0], "").startswith("app."), (
        f"the default (last) Dockerfile stage starts {serve['cmd'][0]!r}, not the server's console script "
        f"(pyproject: {scripts})"
    )
    services = compose()["services"]
    targets = {name: (service.get("build") or {}).get("target") for name, service in services.items()}
    stage_names = {stage.name for stage in stages}
    for name, target in targets.items():
        assert target in stage_names, f"docker-compose.yml service {name} builds target {target!r}: no such stage"
    api_target = targets["api"]
    assert api_target == final.name, f"api builds {api_target!r}, the Dockerfile's default stage is {final.name!r}"
    for name, service in training_services().items():
        train_cmd = effective(stages, targets[name])["cmd"] or []
        train_program = (container_command(service) or train_cmd)[0]
        assert scripts.get(train_program, "").startswith("training."), f"the {name} service runs {train_program!r}"


def test_the_train_entrypoint_runs_its_command_and_says_what_to_mount(tmp_path: Path) -> None:
    """The train image's ENTRYPOINT is a script from the build context that runs the command it is given; a
    training started with nothing at $SGAN_DATA_DIR first hears which host folder to mount there."""
    _, stages = dockerfile_stages()
    entrypoint = effective(stages, "train")["entrypoint"]
    assert entrypoint and len(entrypoint) == 1, f"the train image's ENTRYPOINT: {entrypoint}"
    copies = {}
    for arguments in dict((stage.name, stage) for stage in stages)["train"].all("COPY"):
        words = [word for word in arguments.split() if not word.startswith("--")]
        copies[PurePosixPath(words[-1]).name] = ROOT / words[0]
    script = copies.get(PurePosixPath(entrypoint[0]).name)
    assert script and script.is_file(), f"ENTRYPOINT {entrypoint[0]} is not a file the train stage COPYs: {copies}"
    assert effective(stages, stages[-1].name)["entrypoint"] is None, "the serving image must have no ENTRYPOINT"

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for program in ("sgan-train", "cp"):
        (fake_bin / program).write_text(f'#!/bin/sh\necho "{program} ran with $*"\n')
        (fake_bin / program).chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    environment = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "SGAN_DATA_DIR": str(data)}

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(script), *command], env=environment, capture_output=True, text=True)

    empty = run("sgan-train", "--dataset", "fashion-mnist", "--out", "/runs/x")
    assert empty.returncode == 0 and empty.stdout == "sgan-train ran with --dataset fashion-mnist --out /runs/x\n"
    assert "TRAIN_DATA_DIR" in empty.stderr and str(data) in empty.stderr, empty.stderr
    assert "pip" in empty.stderr, "the note should say that downloading inside the image cannot work"
    publish = run("cp", "-r", "/runs/x/model", "/models/x")  # publishing needs no data: no note
    assert publish.stdout == "cp ran with -r /runs/x/model /models/x\n" and publish.stderr == ""
    (data / "fashion-mnist").mkdir()
    mounted = run("sgan-train", "--dataset", "fashion-mnist", "--out", "/runs/x")
    assert mounted.stderr == "", f"a note although {data} holds data: {mounted.stderr}"


def test_images_run_as_a_non_root_user() -> None:
    _, stages = dockerfile_stages()
    targets = {stages[-1].name} | {(s.get("build") or {}).get("target") for s in compose()["services"].values()}
    for target in sorted(targets - {None}):
        user = effective(stages, target)["user"].split(":")[0]
        assert user not in {"root", "0"}, f"the {target} image runs as {user!r}"


def test_sgan_variables_are_real_settings() -> None:
    server, training = server_variables(), training_variables()
    known = server | training
    texts = {
        "Dockerfile": DOCKERFILE.read_text(),
        "docker-compose.yml": COMPOSE_FILE.read_text(),
        "README.md (Deploy with Docker)": readme_section(),
        str(SMOKE_SCRIPT.relative_to(ROOT)): SMOKE_SCRIPT.read_text(),
    }
    drifted = {where: sorted(sgan_names_in(text) - known) for where, text in texts.items()}
    drifted = {where: names for where, names in drifted.items() if names}
    assert not drifted, f"SGAN_* names that neither app.settings.Settings nor training reads: {drifted}"

    services = compose()["services"]
    api_extra = set(service_environment(services["api"])) & (known - server)
    assert not api_extra, f"the api service sets training variables: {sorted(api_extra)}"
    for name, service in training_services().items():
        train_extra = {key for key in service_environment(service) if key.startswith(env_prefix())}
        assert train_extra <= training, f"the {name} service sets variables training does not read: {train_extra}"
    _, stages = dockerfile_stages()
    for stage in stages:
        names = set(effective(stages, stage.name)["env"]) & known
        wrong = names - (training if stage.name == "train" else server)
        assert not wrong, f"Dockerfile stage {stage.name} sets {sorted(wrong)}, which that program does not read"


def test_the_container_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's ENV (`docker run`), and with the compose environment on top (every interpolation at its
    default), start a server that listens outside the container and serves the bundled model."""
    _, stages = dockerfile_stages()
    image_env = effective(stages, stages[-1].name)["env"]
    for where, environment in {
        "the serving image (docker run)": image_env,
        "the api service": image_env | service_environment(compose()["services"]["api"]),
    }.items():
        with monkeypatch.context() as patch:
            for name in server_variables():
                patch.delenv(name, raising=False)
            for key, value in environment.items():
                if key in server_variables():
                    patch.setenv(key, value)
            settings = settings_class()()  # a ValidationError here names the setting the files get wrong
        assert settings.host == "0.0.0.0", f"{where} listens on {settings.host!r}: unreachable from outside"
        assert settings.model_dir is None, (
            f"{where} must serve the bundled model with no volume and no .env; it gets {settings.model_dir}"
        )


def test_the_port_is_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    default_port = settings_class().model_fields["port"].default
    _, stages = dockerfile_stages()
    serve = effective(stages, stages[-1].name)
    api = compose()["services"]["api"]
    ports = {
        "Settings.port default": default_port,
        "Dockerfile EXPOSE": serve["expose"][0] if len(serve["expose"]) == 1 else serve["expose"],
        "Dockerfile ENV SGAN_PORT": int(serve["env"].get(f"{env_prefix()}PORT", default_port)),
        "docker-compose.yml api SGAN_PORT": int(service_environment(api).get(f"{env_prefix()}PORT", default_port)),
    }
    cmd = serve["cmd"] or []
    if "--port" in cmd:
        ports["Dockerfile CMD --port"] = int(cmd[cmd.index("--port") + 1])
    api_command = container_command(api) or []
    if "--port" in api_command:
        ports["docker-compose.yml api command --port"] = int(api_command[api_command.index("--port") + 1])
    published = [str(port) for port in interpolate(api.get("ports") or [])]
    assert len(published) == 1, f"the api service should publish one port: {published}"
    ports["docker-compose.yml api ports (container side)"] = int(published[0].rsplit(":", 1)[-1].split("/")[0])
    assert len(set(ports.values())) == 1, f"the server's port drifted: {ports}"


def _run_healthcheck(
    words: list[str], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, client: Any
) -> str:
    """Run the health check's `python -c` code with urlopen answered by ``client`` (the real app); its URL.

    Raises what the check raises (an uncaught exception: exit status 1, "unhealthy")."""
    assert words[:2] == ["python", "-c"], f"the health check must run Python's urllib (no curl in slim): {words}"
    asked: list[str] = []

    def fake_urlopen(request: Any, *args: Any, **kwargs: Any) -> Any:
        url = request if isinstance(request, str) else request.full_url
        asked.append(url)
        parts = urlsplit(url)
        response = client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
        if response.status_code >= 400:  # what urllib does with an error status
            raise urllib.error.HTTPError(url, response.status_code, response.text, None, None)  # type: ignore[arg-type]
        return io.BytesIO(response.content)

    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    try:
        exec(compile(words[2], "<healthcheck>", "exec"), {})
    finally:
        assert len(asked) == 1, f"the health check made {len(asked)} requests: {asked}"
    return asked[0]


def test_health_checks_pass_only_when_the_model_is_loaded(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = settings_class()(model_dir=tiny_model_dir)
    _, stages = dockerfile_stages()
    serve = effective(stages, stages[-1].name)
    api = compose()["services"]["api"]
    assert serve["healthcheck"], "the serving image has no HEALTHCHECK"
    assert api["healthcheck"]["test"][0] == "CMD", "compose healthcheck: use the exec form ['CMD', ...]"
    checks = {
        "Dockerfile HEALTHCHECK": (healthcheck_command(serve["healthcheck"]), serve["env"]),
        "docker-compose.yml api healthcheck": (
            [str(word) for word in api["healthcheck"]["test"][1:]],
            serve["env"] | service_environment(api),
        ),
    }
    port = settings_class().model_fields["port"].default
    loading = TestClient(create_app(settings))  # no `with`: the lifespan has not loaded the model
    with TestClient(create_app(settings)) as ready:
        for where, (words, environment) in checks.items():
            with monkeypatch.context() as patch:
                url = urlsplit(_run_healthcheck(words, environment, patch, ready))
            assert url.path == "/ready", f"{where} asks {url.path}: healthy must mean the model is loaded (/ready)"
            assert (url.hostname, url.port) == ("127.0.0.1", port), (
                f"{where} asks {url.netloc}; the server is on {port}"
            )
            with monkeypatch.context() as patch, pytest.raises(urllib.error.HTTPError) as not_ready:
                _run_healthcheck(words, environment, patch, loading)
            assert not_ready.value.code == 503, f"{where} before the model is loaded: {not_ready.value}"


def test_volumes_hold_the_paths_the_programs_use() -> None:
    document = compose()
    services = document["services"]
    named = set(document.get("volumes") or {})
    api_mounts = service_mounts(services["api"], named)
    prefix = env_prefix()
    all_train_mounts = []
    runs = []
    for name, service in training_services().items():
        train_mounts = service_mounts(service, named)
        all_train_mounts += train_mounts
        data_dir = service_environment(service).get(f"{prefix}DATA_DIR")
        assert data_dir and under(data_dir, train_mounts), f"{name}: {prefix}DATA_DIR={data_dir} is not on a volume"
        data_mount = under(data_dir, train_mounts)
        assert data_mount.read_only, f"{name} mounts the data read-write"
        # With TRAIN_DATA_DIR unset, a bind mount of ./data would make Docker create it, empty and root-owned.
        assert data_mount.named, f"{name}: with nothing set, the data mount is the host path {data_mount.source}"
        runs.append(
            ComposeRun("docker-compose.yml", service.get("profiles") or [], name, container_command(service) or [])
        )

        # A model published by a training service into a named volume is the same path for `api`.
        for mount in api_mounts:
            if mount.named:
                assert any(m.source == mount.source and m.target == mount.target for m in train_mounts), (
                    f"api mounts volume {mount.source} at {mount.target}; {name} must mount it at the same place"
                )
                assert mount.read_only, f"api should mount {mount.source} read-only"

    # What training writes must outlive the container; what the server reads must be a volume it mounts.
    problems = []
    for run in runs + documented_runs():
        mounts = service_mounts(services[run.service], named)
        if run.command[:1] in (["sgan-train"], ["sgan-eval"]):
            args = parse_cli(run.command[0], run.command[1:], run.where)
            paths = {"--out": getattr(args, "out", None), "--data-dir": getattr(args, "data_dir", None)}
            paths["model_dir"] = getattr(args, "model_dir", None)
            for flag, path in paths.items():
                if path and not under(path, mounts):
                    problems.append(f"{run.where}: {run.command[0]} {flag} {path} is on no volume of {run.service}")
        if run.command[:1] == ["cp"]:
            for path in [word for word in run.command[1:] if not word.startswith("-")]:
                if not under(path, mounts):
                    problems.append(f"{run.where}: cp {path}: not on a volume of {run.service}")
    for where, text in (("README.md", readme_section()), (SMOKE_SCRIPT.name, SMOKE_SCRIPT.read_text())):
        for path in re.findall(rf"{prefix}MODEL_DIR=['\"]?(/[^\s'\"]+)", text):
            if not under(path, api_mounts):
                problems.append(f"{where}: {prefix}MODEL_DIR={path} is on no volume of the api service")
    assert not problems, "\n".join(problems)

    # A fresh named volume takes the image directory's owner: the non-root user must own each mount point.
    _, stages = dockerfile_stages()
    runtime_runs = " ".join(" ".join(stage.all("RUN")) for stage in stage_chain(stages, stages[-1].name))
    for mount in all_train_mounts + api_mounts:
        if mount.named or not mount.read_only:
            assert re.search(rf"chown\b[^&;]*\s{re.escape(mount.target)}(\s|$)", runtime_runs), (
                f"the image does not create and chown {mount.target}: the non-root user cannot write the volume"
            )


def test_compose_services_have_the_promised_shape() -> None:
    services = compose()["services"]
    api = services["api"]
    assert "profiles" not in api, "api must start with a plain `docker compose up`"
    assert api.get("restart") in {"always", "unless-stopped", "on-failure"}, f"api restart: {api.get('restart')}"
    training = training_services()
    assert set(training) == {"train", "train-gpu"}, f"training services: {sorted(training)}"
    assert training["train"].get("profiles") == ["train"], f"train profiles: {training['train'].get('profiles')}"
    assert training["train-gpu"].get("profiles") == ["gpu"], (
        f"train-gpu profiles: {training['train-gpu'].get('profiles')}"
    )
    drain_s = float(service_environment(api).get(f"{env_prefix()}GRACEFUL_SHUTDOWN_S", 0)) or (
        settings_class().model_fields["graceful_shutdown_s"].default
    )
    assert duration_s(api.get("stop_grace_period", "10s")) > drain_s, (
        f"api stop_grace_period {api.get('stop_grace_period', '10s')} is shorter than the server's "
        f"{drain_s} s graceful shutdown: Docker would SIGKILL it mid-drain"
    )
    # Training, evaluation and publishing through `train` work on a host without the NVIDIA toolkit.
    assert not reserved_devices(training["train"]), "train reserves devices: it must run on any host"
    devices = reserved_devices(training["train-gpu"])
    assert any("gpu" in device.get("capabilities", []) for device in devices), f"train-gpu reserves no GPU: {devices}"
    same = ("environment", "volumes", "command")
    differ = [key for key in same if training["train"].get(key) != training["train-gpu"].get(key)]
    assert not differ, f"train and train-gpu differ in {differ}: the same runs must work on either"
    for run in documented_runs():
        service = services.get(run.service)
        assert service is not None, f"{run.where}: `run {run.service}`: no such service in docker-compose.yml"
        missing = set(service.get("profiles") or []) - set(run.profiles)
        assert not service.get("profiles") or not missing, (
            f"{run.where}: `run {run.service}` without --profile {sorted(missing)[0]}: compose will not find it"
        )
    assert any(run.service == "train" and run.command[:1] == ["sgan-train"] for run in documented_runs()), (
        "the README documents no `docker compose --profile train run train sgan-train ...`"
    )


def test_build_arguments_exist_and_torch_matches_the_pin() -> None:
    global_args, stages = dockerfile_stages()
    declared: dict[str, str] = dict(global_args)
    for stage in stages:
        for arguments in stage.all("ARG"):
            key, _, default = arguments.partition("=")
            declared.setdefault(key, default)
    for name, service in compose()["services"].items():
        for arg in interpolate((service.get("build") or {}).get("args") or {}):
            assert arg in declared, f"docker-compose.yml {name} passes build arg {arg}: the Dockerfile has no ARG"
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert declared.get("TORCH_VERSION") == pins.get("torch"), (
        f"Dockerfile TORCH_VERSION={declared.get('TORCH_VERSION')} but constraints.txt pins torch=={pins.get('torch')}"
    )
    services = compose()["services"]
    args = {name: interpolate(service["build"]["args"]) for name, service in services.items()}
    assert "/cpu" in declared["TORCH_INDEX_URL"] and "/cpu" in args["api"]["TORCH_INDEX_URL"], (
        "the serving image must get the CPU torch"
    )
    # The CPU training image reuses every layer of the serving image's build but the last.
    assert args["train"] == args["api"], f"train builds with {args['train']}, api with {args['api']}"
    gpu_index = args["train-gpu"]["TORCH_INDEX_URL"]
    assert "/cpu" not in gpu_index, f"the train-gpu image gets torch from {gpu_index}: not a CUDA build"
    # Air-gapped builds: the base image and the package indexes are build arguments that compose passes on
    # from the environment; left unset there, they keep the Dockerfile's defaults.
    for name in ("PYTHON_IMAGE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        assert name in declared, f"the Dockerfile has no ARG {name}"
        for service, service_args in args.items():
            assert name in service_args and service_args[name] is None, (
                f"docker-compose.yml {service} should pass {name} through from the environment (no value)"
            )


def test_dockerignore_keeps_local_state_out_and_lets_the_package_in() -> None:
    rules = dockerignore_rules()
    kept_out = [".git/HEAD", ".venv/bin/python", "tests/conftest.py", "runs/x/model/model.json", "data/mnist/x"]
    kept_out += [".env", "app/__pycache__/main.cpython-311.pyc", "sgan_service.egg-info/PKG-INFO"]
    leaked = [path for path in kept_out if not is_ignored(path, rules)]
    assert not leaked, f".dockerignore lets these into the build context: {leaked}"

    # Everything the build stage COPYs from the context, and everything `pip install .` reads from it.
    _, stages = dockerfile_stages()
    sources = []
    for stage in stages:
        for arguments in stage.all("COPY"):
            words = arguments.split()
            if not any(word.startswith("--from") for word in words):
                sources += [word for word in words[:-1] if not word.startswith("--")]
    meta = pyproject()
    packages = [
        pattern.rstrip("*").rstrip(".") for pattern in meta["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    needed = {"pyproject.toml", meta["project"]["readme"], *packages}
    not_copied = needed - {source.rstrip("/").removeprefix("./") for source in sources}
    assert not not_copied, f"`pip install .` needs {sorted(not_copied)}, which the Dockerfile does not COPY"

    from model import BUNDLED_MODEL_DIR

    context_files = [str(BUNDLED_MODEL_DIR.relative_to(ROOT) / "model.json")]
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"Dockerfile COPY {source}: no such path in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        context_files += [str(p.relative_to(ROOT)) for p in files if "__pycache__" not in p.parts]
    missing = [path for path in context_files if is_ignored(path, rules)]
    assert not missing, f".dockerignore keeps out files the image needs: {missing[:10]}"


# ---------------------------------------------------------------------------------------------------------
# requirements.lock: the image's dependencies


def locked_pins() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {canonical name: (version, [sha256 hashes])}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK_FILE.read_text())
    for entry in entries:
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)", entry)
        if match:
            pins[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes_but_torch() -> None:
    pins = locked_pins()
    assert pins, "requirements.lock pins nothing"
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed, f"requirements.lock: pins without a sha256 (pip's hash-checking mode refuses them): {unhashed}"
    # torch is installed from TORCH_INDEX_URL (its CPU and CUDA builds are different files of one version).
    assert "torch" not in pins, "requirements.lock pins torch: the train-gpu build could not install a CUDA torch"
    environment = default_environment() | {"python_version": "3.11", "sys_platform": "linux", "extra": ""}
    problems = []
    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "torch" or (requirement.marker and not requirement.marker.evaluate(environment)):
            continue
        if name not in pins:
            problems.append(f"{requirement}: not in the lock")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{requirement}: the lock has {pins[name][0]}")
    assert not problems, "requirements.lock is stale; run scripts/lock-image-deps.sh:\n" + "\n".join(problems)


def test_the_tests_run_the_locked_versions() -> None:
    """The images ship requirements.lock; this environment (CI's, installed with the lock as constraints) must
    hold the same versions, or the tests vouch for packages the images do not have."""
    drifted = {}
    for name, (version, _) in locked_pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drifted[name] = f"locked {version}, installed {installed}"
    assert not drifted, (
        f"this environment differs from requirements.lock: {drifted}. Install with the lock as constraints, as "
        ".ci/run does, or move the lock (scripts/lock-image-deps.sh --upgrade-package NAME)"
    )


def test_the_image_installs_the_lock_in_hash_checking_mode_and_nothing_unpinned() -> None:
    _, stages = dockerfile_stages()
    runs = [run for stage in stages for run in stage.all("RUN")]
    copies = [copy.split() for stage in stages for copy in stage.all("COPY")]
    lock_targets = [words[-1] for words in copies if LOCK_FILE.name in words[:-1]]
    assert lock_targets, "the Dockerfile does not COPY requirements.lock"
    lock_installs = [run for run in runs if "--require-hashes" in run and f"-r {lock_targets[0]}" in run]
    assert lock_installs, f"no RUN installs {lock_targets[0]} with pip install --require-hashes"
    # Every other pip install: torch alone (pinned by TORCH_VERSION), or the package without dependencies.
    for run in runs:
        for command in re.findall(r"pip install ([^&;]*)", run):
            if "--require-hashes" in command:
                continue
            words = shlex.split(command)
            packages, index = [], 0
            while index < len(words):
                if words[index] in {"--index-url", "--extra-index-url", "--find-links", "-r", "-c"}:
                    index += 1  # the option's value
                elif not words[index].startswith("-"):
                    packages.append(words[index])
                index += 1
            assert packages == ["torch==${TORCH_VERSION}"] or ("--no-deps" in words and packages == ["."]), (
                f"Dockerfile: `pip install {command.strip()}` installs packages that requirements.lock does not pin"
            )
