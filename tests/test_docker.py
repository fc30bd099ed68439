"""The image's recipe, read without an engine: Dockerfile, .dockerignore, the lock and the
scripts, linted and checked (tests/test_image.py builds and runs the image for real)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from processes import default_sigint

from shim import config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKER = ROOT / "docker"
LOCK = ROOT / "requirements.lock"
IMAGE_EXTRAS = ("otel",)  # extras the image has: it traces when a setting says so
# The public base, pinned to an exact Python release; a local one replaces it by build argument.
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-[a-z]+")
SHELL_SCRIPTS = [*sorted(DOCKER.glob("*.sh")),
                 *(ROOT / "scripts" / name for name in ("build-base", "build-image",
                                                        "ensure-docker", "ensure-nginx"))]
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|_KEY\b|CREDENTIAL", re.IGNORECASE)



# --- the Dockerfile, read as the builder reads it ---------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """Return the (INSTRUCTION, arguments) pairs, comments dropped and continuations joined."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, arguments = current.strip().partition(" ")
            logical.append((keyword.upper(), " ".join(arguments.split())))
        current = ""
    return logical


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Return each stage's instructions by stage name, FROM included, in build order (the
    global ARGs before the first FROM belong to no stage)."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            words = arguments.split()
            current = named.setdefault(words[-1] if "AS" in map(str.upper, words) else "", [])
        if current is not None:
            current.append((keyword, arguments))
    return named


def global_args(text: str) -> dict[str, str]:
    """Return the ARGs declared before the first FROM, with their defaults."""
    declared: dict[str, str] = {}
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            declared[name] = default
    return declared


def copy_sources(arguments: str) -> list[str]:
    """Return the build-context sources of a COPY (none for COPY --from)."""
    words = arguments.split()
    if any(word.startswith("--from=") for word in words):
        return []
    return [word for word in words[:-1] if not word.startswith("--")]


def install_steps(text: str) -> list[list[str]]:
    """Return the arguments of every docker/install.sh run, in build order."""
    return [arguments.split("install.sh", 1)[1].split(">")[0].split()
            for keyword, arguments in instructions(text)
            if keyword == "RUN" and "docker/install.sh" in arguments]


# --- .dockerignore, matched as the builder matches it ------------------------------------------

def _pattern(text: str) -> re.Pattern:
    regex, index = "", 0
    while index < len(text):
        if text.startswith("**/", index):
            regex, index = regex + "(?:.*/)?", index + 3
        elif text.startswith("**", index):
            regex, index = regex + ".*", index + 2
        elif text[index] == "*":
            regex, index = regex + "[^/]*", index + 1
        elif text[index] == "?":
            regex, index = regex + "[^/]", index + 1
        elif text[index] == "[":
            end = text.index("]", index)
            regex, index = regex + text[index:end + 1], end + 1
        else:
            regex, index = regex + re.escape(text[index]), index + 1
    return re.compile(regex)


def ignore_rules() -> list[tuple[bool, re.Pattern]]:
    """Return .dockerignore's rules as (exclude?, pattern), in order."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), _pattern(line.lstrip("!").strip("/"))))
    return rules


def excluded(path: str, rules) -> bool:
    """Return whether the build context leaves ``path`` out (the last matching rule wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    verdict = False
    for exclude, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = exclude
    return verdict


def context_files(source: str, rules) -> list[Path]:
    """Return the files under ``source`` (relative to the repository) the context holds."""
    top = ROOT / source
    files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    return [path for path in files if not excluded(path.relative_to(ROOT).as_posix(), rules)]


# --- lint and structure ------------------------------------------------------------------------

def tool(name: str) -> str:
    """Return the path of a linter from the test extras; fail, not skip, when it is missing."""
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    found = shutil.which(name, path=search)
    if found is None:
        pytest.fail(f"{name} is missing: install the test extras (pip install -e '.[test]')")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = subprocess.run([tool("hadolint"), "--no-color", "--failure-threshold", "style",
                             "--format", "json", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60, check=False,
                            preexec_fn=default_sigint)
    assert (result.returncode, json.loads(result.stdout or "[]")) == (0, []), result.stderr


def test_shellcheck_finds_nothing_in_the_scripts():
    scripts = [str(path) for path in SHELL_SCRIPTS]
    assert len(scripts) == 6
    result = subprocess.run([tool("shellcheck"), "--severity=style", *scripts],
                            capture_output=True, text=True, timeout=60, check=False,
                            preexec_fn=default_sigint)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_stage_is_slim_non_root_checked_and_started_by_start_sh():
    text = DOCKERFILE.read_text()
    built = stages(text)
    assert len(built) >= 2
    # The venv's interpreter is a symlink into the base image: every stage must share it.
    assert {arguments.split()[0] for stage in built.values()
            for keyword, arguments in stage if keyword == "FROM"} == {"${BASE_IMAGE}"}
    assert PINNED_BASE.fullmatch(global_args(text)["BASE_IMAGE"])
    runtime = list(built.values())[-1]
    def only(wanted: str) -> str:
        [arguments] = [arguments for keyword, arguments in runtime if keyword == wanted]
        return arguments
    user = only("USER").split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), user
    assert f"--uid {user[0]}" in only("RUN") and "--shell /usr/sbin/nologin" in only("RUN")
    assert only("HEALTHCHECK").endswith('CMD ["/opt/shim/bin/python", "/app/healthcheck.py"]')
    assert json.loads(only("ENTRYPOINT")) == ["/app/start.sh"]  # exec form: no shell as PID 1
    assert only("EXPOSE") == "8080"
    assert ("COPY", "--from=build /opt/shim /opt/shim") in runtime


def test_dependencies_are_installed_before_the_source_is_copied():
    text = DOCKERFILE.read_text()
    assert install_steps(text) == [["deps", "requirements.lock"], ["app", "/src"]]
    build = stages(text)["build"]
    deps_at = next(index for index, (keyword, arguments) in enumerate(build)
                   if keyword == "RUN" and "install.sh deps" in arguments)
    # The dependency layer's inputs are the script, the lock and its wheels, nothing more.
    before = [source for keyword, arguments in build[:deps_at] if keyword == "COPY"
              for source in copy_sources(arguments)]
    assert before == ["docker/install.sh", "requirements.lock", "docker/wheels/"]
    after = [source for keyword, arguments in build[deps_at:] if keyword == "COPY"
             for source in copy_sources(arguments)]
    assert "shim" in after


def test_no_secret_is_baked_into_the_image():
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", arguments) or arguments.split()[:1]
            assert not [name for name in names if SECRET_NAME.search(name)], arguments
        if keyword == "COPY":
            assert not [source for source in copy_sources(arguments)
                        if source.endswith((".toml", ".env", ".pem", ".key"))
                        and source != "pyproject.toml"], arguments


def test_the_context_holds_what_the_dockerfile_copies_and_nothing_else():
    rules = ignore_rules()
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        for source in copy_sources(arguments) if keyword == "COPY" else []:
            assert (ROOT / source).exists(), source
            assert not excluded(source, rules), source
            assert context_files(source, rules), source
    for path in (".venv/bin/python", ".git/HEAD", "tests/test_docker.py", "fixtures/README.md",
                 "bench/run.py", ".pytest_cache/README.md", "shim/__pycache__/cli.cpython-311.pyc",
                 "redmart_shim.egg-info/PKG-INFO", "shim.toml", ".env", "credentials.env",
                 "docker/build-backend.in"):
        assert excluded(path, rules), path
    for path in ("requirements.lock", "docker/wheels/flask-3.1.3-py3-none-any.whl"):
        assert not excluded(path, rules), path


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    return healthcheck


def start_sh_bind(env: dict[str, str], tmp_path: Path) -> str | None:
    """Run start.sh with a stand-in ``redmart-shim`` on PATH; return the SHIM_BIND serve got."""
    stand_in = tmp_path / "bin" / "redmart-shim"
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text('#!/bin/sh\nprintf "%s" "${SHIM_BIND-<unset>}"\n')
    stand_in.chmod(0o755)
    result = subprocess.run(["/bin/sh", str(DOCKER / "start.sh")],
                            env={**env, "PATH": f"{stand_in.parent}:/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30, check=True,
                            preexec_fn=default_sigint)
    return None if result.stdout == "<unset>" else result.stdout


@pytest.mark.parametrize(("given", "file_bind", "probed"), [
    ({}, None, "127.0.0.1:8080"),
    ({"PORT": "9000"}, None, "127.0.0.1:9000"),
    ({"PORT": "9000", "SHIM_BIND": "[::]:7000"}, None, "[::1]:7000"),  # nginx: IPv6 only
    ({}, "127.0.0.2:7100", "127.0.0.2:7100"),  # the file's bind, no longer overridden
    ({"PORT": "9000"}, "127.0.0.2:7100", "127.0.0.1:9000"),  # a platform's PORT wins
    ({"SHIM_BIND": ":7200"}, "127.0.0.2:7100", "127.0.0.1:7200"),
], ids=["default", "PORT", "SHIM_BIND", "file", "PORT-over-file", "SHIM_BIND-over-file"])
def test_the_healthcheck_probes_the_address_serve_listens_on(given, file_bind, probed,
                                                              tmp_path, test_secrets):
    """What start.sh hands serve, loaded as serve loads it, is what the healthcheck probes
    (with the container's environment: a HEALTHCHECK does not see start.sh's exports)."""
    env = {"SHIM_APP_KEY": "100001", "SHIM_APP_SECRET": test_secrets.app_secret, **given}
    if file_bind is not None:
        (tmp_path / "shim.toml").write_text(f'[serve]\nbind = "{file_bind}"\n')
        env["SHIM_CONFIG"] = str(tmp_path / "shim.toml")
    serve_env = dict(env)
    bind = start_sh_bind(env, tmp_path)
    if bind is not None:
        serve_env["SHIM_BIND"] = bind
    settings = config.load(env=serve_env)  # as serve loads them
    host, port = config.host_port(settings.bind or config.SERVE_BIND)
    loopback = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)  # noqa: S104
    assert f"{loopback}:{port}" == probed
    assert load_healthcheck().health_url(env) == f"http://{probed}/healthz"


def test_the_healthcheck_reports_a_configuration_error_without_a_trace(tmp_path):
    env = {**os.environ, "SHIM_BIND": "nowhere", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env,
                            capture_output=True, text=True, timeout=60, check=False,
                            preexec_fn=default_sigint)
    assert result.returncode == 1
    assert result.stderr.startswith("healthcheck: configuration error:"), result.stderr
    assert "SHIM_BIND" in result.stderr and "Traceback" not in result.stderr


# --- the lock ----------------------------------------------------------------------------------

def locked() -> dict[str, tuple[str, list[str]]]:
    """Return requirements.lock as {name: (version, hashes)}."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=\S)", LOCK.read_text()):
        if entry.startswith("#") or not entry.strip():
            continue
        requirement = entry.split(" ", 1)[0]
        name, _, version = requirement.partition("==")
        assert version, f"not pinned: {requirement}"
        pins[canonicalize_name(name)] = (version, re.findall(r"--hash=sha256:([0-9a-f]{64})",
                                                               entry))
    return pins


def test_the_lock_pins_with_hashes_what_pyproject_asks_for():
    """Every dependency, the otel extra (the image can trace) and the build backend of
    pyproject.toml have a pin in the lock that satisfies them, and every pin carries hashes:
    edit the dependencies, regenerate the lock."""
    pins = locked()
    assert all(hashes for _, hashes in pins.values()), pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    wanted = [*project["project"]["dependencies"],
              *(text for extra in IMAGE_EXTRAS for text in extras[extra]),
              *project["build-system"]["requires"]]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{text} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (text, pins[name])
    for extra in {extra for text in wanted for extra in Requirement(text).extras}:
        assert extra == "binary" and "psycopg-binary" in pins


def test_the_lock_takes_the_build_backend_from_pyproject():
    """docker/build-backend.in, an input of the lock, names pyproject's build requirements."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = [line.split("#")[0].strip() for line in
             (DOCKER / "build-backend.in").read_text().splitlines()]
    assert [line for line in lines if line] == project["build-system"]["requires"]
    assert "docker/build-backend.in" in LOCK.read_text().splitlines()[1]  # the command line


def test_the_lock_is_made_by_the_readmes_command():
    """requirements.lock's header is the command the README says to run (extras included)."""
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^\.venv/bin/(uv pip compile (?:.*\\\n)*.*)$", readme, re.MULTILINE)
    made_by = LOCK.read_text().splitlines()[1].removeprefix("#").split()
    assert re.sub(r"\\\n", " ", command).split() == made_by
    assert all(f"--extra {extra}" in " ".join(made_by) for extra in IMAGE_EXTRAS)
