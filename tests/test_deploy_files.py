"""The Docker files agree with the code they deploy.

No Docker engine runs on our machines, so the images are never built here (scripts/ci-deploy-checks.sh lints
and validates the files; scripts/compose-smoke.sh builds and runs them where Docker exists). What can drift
silently is checked here instead: every program, flag, ``SGAN_*`` name, port, path and health check in the
Dockerfile, .dockerignore, docker-compose.yml, the smoke script and the README's "Deploy with Docker"
commands is compared with what the code declares (pyproject's console scripts, the argparse parsers,
``Settings.model_fields``, the FastAPI routes), never with a copy of it written into this file.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import re
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SMOKE_SCRIPT = ROOT / "scripts" / "compose-smoke.sh"
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
    for source in (ROOT / "training").glob("*.py"):
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
        for instruction in ("ENTRYPOINT", "CMD"):
            for arguments in stage.all(instruction):
                starts.append((f"Dockerfile stage {stage.name} {instruction}", exec_form(arguments, stage.name)))
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
    train_cmd = effective(stages, targets["train"])["cmd"] or []
    train_program = (container_command(services["train"]) or train_cmd)[0]
    assert scripts.get(train_program, "").startswith("training."), f"the train service runs {train_program!r}"


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
    train_extra = {name for name in service_environment(services["train"]) if name.startswith(env_prefix())}
    assert train_extra <= training, f"the train service sets variables training does not read: {train_extra}"
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
    train_mounts = service_mounts(services["train"], named)
    prefix = env_prefix()

    data_dir = service_environment(services["train"]).get(f"{prefix}DATA_DIR")
    assert data_dir and under(data_dir, train_mounts), f"train: {prefix}DATA_DIR={data_dir} is not on a volume"

    # What training writes must outlive the container; what the server reads must be a volume it mounts.
    problems = []
    runs = [ComposeRun("docker-compose.yml", ["train"], "train", container_command(services["train"]) or [])]
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

    # A model published by `train` into a named volume is the same path for `api`.
    for mount in api_mounts:
        if mount.named:
            assert any(m.source == mount.source and m.target == mount.target for m in train_mounts), (
                f"api mounts volume {mount.source} at {mount.target}; train must mount it at the same place"
            )
            assert mount.read_only, f"api should mount {mount.source} read-only"

    # A fresh named volume takes the image directory's owner: the non-root user must own each mount point.
    _, stages = dockerfile_stages()
    runtime_runs = " ".join(" ".join(stage.all("RUN")) for stage in stage_chain(stages, stages[-1].name))
    for mount in train_mounts + api_mounts:
        if mount.named or not mount.read_only:
            assert re.search(rf"chown\b[^&;]*\s{re.escape(mount.target)}(\s|$)", runtime_runs), (
                f"the image does not create and chown {mount.target}: the non-root user cannot write the volume"
            )


def test_compose_services_have_the_promised_shape() -> None:
    services = compose()["services"]
    api, train = services["api"], services["train"]
    assert "profiles" not in api, "api must start with a plain `docker compose up`"
    assert api.get("restart") in {"always", "unless-stopped", "on-failure"}, f"api restart: {api.get('restart')}"
    assert train.get("profiles") == ["train"], f"train profiles: {train.get('profiles')}"
    drain_s = float(service_environment(api).get(f"{env_prefix()}GRACEFUL_SHUTDOWN_S", 0)) or (
        settings_class().model_fields["graceful_shutdown_s"].default
    )
    assert duration_s(api.get("stop_grace_period", "10s")) > drain_s, (
        f"api stop_grace_period {api.get('stop_grace_period', '10s')} is shorter than the server's "
        f"{drain_s} s graceful shutdown: Docker would SIGKILL it mid-drain"
    )
    devices = train["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) for device in devices), f"train reserves no GPU: {devices}"
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
    api_index = interpolate(services["api"]["build"]["args"])["TORCH_INDEX_URL"]
    train_index = interpolate(services["train"]["build"]["args"])["TORCH_INDEX_URL"]
    assert "/cpu" in declared["TORCH_INDEX_URL"] and "/cpu" in api_index, "the serving image must get the CPU torch"
    assert "/cpu" not in train_index, f"the train image gets torch from {train_index}: not a CUDA build"


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
