"""The image: Dockerfile and .dockerignore linted and checked, and the install and start steps
it runs (docker/*.sh) run here the same way, since these machines have no Docker engine."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import write_declarative_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKER = ROOT / "docker"
STAGES_BASE = "python:3.11-slim"
GRACEFUL_TIMEOUT_S = 10
SLOW_MS = 1500
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
    """Return each stage's instructions by stage name, FROM included, in build order."""
    named: dict[str, list[tuple[str, str]]] = {}
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            words = arguments.split()
            current = named.setdefault(words[-1] if "AS" in map(str.upper, words) else "", [])
        current.append((keyword, arguments))
    return named


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
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, json.loads(result.stdout or "[]")) == (0, []), result.stderr


def test_shellcheck_finds_nothing_in_the_scripts():
    scripts = sorted(str(path) for path in DOCKER.glob("*.sh"))
    assert scripts
    result = subprocess.run([tool("shellcheck"), "--severity=style", *scripts],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_stage_is_slim_non_root_checked_and_started_by_start_sh():
    built = stages(DOCKERFILE.read_text())
    assert len(built) >= 2
    # The venv's interpreter is a symlink into the base image: every stage must share it.
    assert {arguments.split()[0] for stage in built.values()
            for keyword, arguments in stage if keyword == "FROM"} == {STAGES_BASE}
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
    assert [step[0] for step in install_steps(text)] == ["requirements", "deps", "app"]
    build = stages(text)["build"]
    deps_at = next(index for index, (keyword, arguments) in enumerate(build)
                   if keyword == "RUN" and "install.sh deps" in arguments)
    # The dependency layer's inputs are the script and the dependency list, nothing more.
    before = [source for keyword, arguments in build[:deps_at] if keyword == "COPY"
              for source in copy_sources(arguments)]
    assert before == ["docker/install.sh"]
    assert any(keyword == "COPY" and "--from=requirements /src/requirements.txt" in arguments
               for keyword, arguments in build[:deps_at])
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
                 "redmart_shim.egg-info/PKG-INFO", "shim.toml", ".env", "credentials.env"):
        assert excluded(path, rules), path


def test_the_healthcheck_probes_the_port_start_sh_binds():
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.health_url({}) == "http://127.0.0.1:8080/healthz"
    assert healthcheck.health_url({"PORT": "9000"}) == "http://127.0.0.1:9000/healthz"
    assert healthcheck.health_url(
        {"PORT": "9000", "SHIM_BIND": "[::]:7000"}) == "http://127.0.0.1:7000/healthz"


# --- the install and start steps, run as the image runs them -----------------------------------

def run_step(*arguments: str, env: dict[str, str], stdout=None) -> None:
    """Run one docker/install.sh step; fail with its output when it fails."""
    result = subprocess.run([str(DOCKER / "install.sh"), *arguments], env=env,
                            stdout=stdout or subprocess.PIPE,
                            stderr=subprocess.PIPE if stdout else subprocess.STDOUT,
                            text=True, timeout=300, check=False)
    output = result.stderr if stdout else result.stdout
    assert result.returncode == 0, f"install.sh {arguments[0]}:\n{output}"


def clean_env(**values: str) -> dict[str, str]:
    """Return this environment without SHIM_* settings, plus ``values``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SHIM_")}
    return {**env, **values}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """Build the image's venv as the build stages do, from the context; return the venv."""
    root = tmp_path_factory.mktemp("image")
    context, rules = root / "src", ignore_rules()
    build = stages(DOCKERFILE.read_text())["build"]
    sources = [source for keyword, arguments in build if keyword == "COPY"
               for source in copy_sources(arguments) if not source.startswith("docker/")]
    assert sources == ["pyproject.toml", "README.md", "shim"]  # copied to /src, installed from it
    for source in sources:
        for path in context_files(source, rules):
            target = context / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    venv = root / "opt-shim"
    env = clean_env(SHIM_VENV=str(venv), PYTHON=sys.executable)
    requirements = root / "requirements.txt"
    with requirements.open("w") as handle:
        run_step("requirements", str(context / "pyproject.toml"), env=env, stdout=handle)
    run_step("deps", str(requirements), env=env)
    run_step("app", str(context), env=env)
    return venv


@pytest.mark.slow
def test_install_puts_the_package_and_nothing_else_in_the_venv(image):
    lines = (image.parent / "requirements.txt").read_text().splitlines()
    assert "gunicorn>=23" in lines
    assert not (image / "bin" / "pip").exists()
    located = subprocess.run(
        [str(image / "bin" / "python"), "-c",
         "import pathlib, shim; print(pathlib.Path(shim.__file__).parent)"],
        cwd=image, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    package = Path(located)
    assert package.is_relative_to(image)  # installed, not the working tree
    assert list((package / "operator" / "templates").glob("*.html"))  # package data too


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthcheck(image: Path, env: dict[str, str]) -> int:
    """Run the image's HEALTHCHECK command; return its exit status."""
    return subprocess.run([str(image / "bin" / "python"), str(DOCKER / "healthcheck.py")],
                          env=env, capture_output=True, timeout=10, check=False).returncode


@pytest.mark.slow
def test_start_serves_with_gunicorn_and_finishes_in_flight_requests_on_sigterm(
        image, sandbox, test_secrets, client_digest, tmp_path, monkeypatch):
    port = free_port()
    config = tmp_path / "shim.toml"
    write_declarative_config(config, sandbox.api_url, client_digest)
    env = clean_env(
        PATH=f"{image / 'bin'}{os.pathsep}{os.environ['PATH']}",  # as the image's ENV PATH
        PORT=str(port), SHIM_BIND=f"127.0.0.1:{port}", SHIM_CONFIG=str(config),
        SHIM_APP_SECRET=test_secrets.app_secret, SHIM_MAIN_ACCESS_TOKEN=test_secrets.access_token,
        SHIM_WORKERS="1", SHIM_THREADS="4", SHIM_READ_TIMEOUT_S="5", SHIM_READ_RETRIES="0",
        SHIM_GRACEFUL_TIMEOUT_S=str(GRACEFUL_TIMEOUT_S))
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        # Its own process group, so a failing test can take down gunicorn's workers too.
        process = subprocess.Popen([str(DOCKER / "start.sh")], env=env, cwd=tmp_path,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while healthcheck(image, env) != 0:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # Both execs happened: this very process is gunicorn, from the image's venv.
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[0] == str(image / "bin" / "python")
        assert argv[1:3] == ["-m", "gunicorn"] and "shim.app:create_app()" in argv

        with requests.Session() as session:
            assert session.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
            token = session.post(base + "/oauth2/token", timeout=10, data={
                "grant_type": "client_credentials", "client_id": "full",
                "client_secret": test_secrets.client_secret})
            assert token.status_code == 200, token.text
            bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
            product = session.get(base + "/v1/products/100150", headers=bearer, timeout=10)
            assert product.status_code == 200, product.text
            assert product.json()["rpc"] == 100150
            assert session.post(sandbox.base_url + "/_sandbox/latency", json={"ms": SLOW_MS},
                                timeout=5).status_code == 200

        # Know the slow call is in flight (waiting in the sandbox) before the signal.
        in_flight, pause = threading.Event(), sandbox.state.pause
        def pausing(ms: float) -> None:
            if ms:
                in_flight.set()
            pause(ms)
        monkeypatch.setattr(sandbox.state, "pause", pausing)

        def slow_get() -> tuple[int, dict]:
            with requests.Session() as session:
                answer = session.get(base + "/v1/products/100150", headers=bearer, timeout=15)
                return answer.status_code, answer.json()

        with ThreadPoolExecutor(max_workers=1) as pool:
            slow = pool.submit(slow_get)
            assert in_flight.wait(10)
            stopping = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status, body = slow.result(timeout=GRACEFUL_TIMEOUT_S + 5)
        assert (status, body["rpc"]) == (200, 100150)
        assert process.wait(timeout=GRACEFUL_TIMEOUT_S + 5) == 0
        assert time.monotonic() - stopping < GRACEFUL_TIMEOUT_S
        assert healthcheck(image, env) == 1  # gone: the check fails as it must
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone: the usual case
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    output = log.read_text()
    assert "Werkzeug" not in output and "development server" not in output
    assert not [secret for secret in test_secrets.all() if secret in output]
