"""Test helpers for the distributed tests: a throwaway PostgreSQL server, the docker-compose worker command,
real worker subprocesses and polling.

A throwaway PostgreSQL server for the distributed tests (127.0.0.1, random free port, temp data dir).

Import the fixtures into a test module with ``from _pg import pg_server_fixture, pg_url_fixture``; they are
requested as ``pg_server`` and ``pg_url``.  The server needs the Debian ``postgresql`` package
(``/usr/lib/postgresql/*/bin``); without it the tests fail in CI (``CI=true``) and are skipped elsewhere.
As root, ``initdb``/``postgres`` run as the ``postgres`` system user.  Password authentication (scram) is on,
so the tests exercise ``PGPASSWORD``.

Studies for these tests use the benchmark objective of ``benchmarks/objectives.py`` (study attr
``automtd:objective = "benchmark"``); worker processes load it as a plugin (``AUTOMTD_PLUGINS``, repository
root on ``PYTHONPATH``), so the worker command is exactly the production one.  In-process workers use the
``bench_plugin`` fixture.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

USER = "automtd"
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]


def find_pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """Start/stop/restart one PostgreSQL cluster; ``url(db)`` has no password (use :meth:`env`)."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout, cwd="/")
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}")

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", USER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", opts, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": PASSWORD}

    def url(self, db: str = "postgres", *, with_password: bool = False) -> str:
        auth = f"{USER}:{PASSWORD}" if with_password else USER
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:10]
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres", autocommit=True
        ) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return name


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[PgServer]:
    bindir = find_pg_bin()
    if bindir is None:
        msg = "PostgreSQL server binaries not found; install the Debian package: apt-get install postgresql"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    root = Path(tempfile.mkdtemp(prefix="automtd-pg-"))
    server = PgServer(bindir, root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_server: PgServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database on the session server; PGPASSWORD is set for this process (not in the URL)."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return pg_server.url(pg_server.create_database())


REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
BENCH_OBJECTIVE = "benchmark"
BENCH_PLUGIN = "benchmarks.objectives"
T = TypeVar("T")

_VAR = re.compile(r"\$\$|\$\{(\w+)(?::?([-?])([^}]*))?\}|\$(\w+)")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """docker compose interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        value = env.get(name)
        if value:
            return value
        if m.group(2) == "-":
            return m.group(3) or ""
        if m.group(2) == "?":
            raise KeyError(f"{name}: {m.group(3)}")
        return ""

    return _VAR.sub(sub, text)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_service_command(service: str, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The service's command and environment from docker-compose.yml, interpolated with ``env``."""
    svc = compose()["services"][service]
    cmd = [substitute(str(part), env) for part in svc.get("command") or []]
    svc_env = {k: substitute(str(v), env) for k, v in (svc.get("environment") or {}).items()}
    return cmd, svc_env


def worker_env(pg_port: int, db: str, study: str, password: str, **extra: str) -> dict[str, str]:
    """The variables a .env would hold, pointing the compose worker at the local test server."""
    return {
        "POSTGRES_PASSWORD": password,
        "POSTGRES_USER": "automtd",
        "POSTGRES_DB": db,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg_port),
        "AUTOMTD_STUDY": study,
        "AUTOMTD_HEARTBEAT_INTERVAL": "1",
        "AUTOMTD_GRACE_PERIOD": "3",
        "AUTOMTD_MAX_RETRY": "2",
        **extra,
    }


def _process_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("AUTOMTD_PLUGINS", BENCH_PLUGIN)
    env.update(extra)
    return env


@pytest.fixture(name="bench_plugin")
def bench_plugin_fixture(monkeypatch: pytest.MonkeyPatch) -> str:
    """Let in-process ``automtd worker`` commands load the benchmark objective; returns its name."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("AUTOMTD_PLUGINS", BENCH_PLUGIN)
    return BENCH_OBJECTIVE


def start(cmd: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a real process (``automtd`` resolves to this venv's script) logging to ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process by the caller's wait()
    proc = subprocess.Popen(list(cmd), env=_process_env(env), stdout=handle, stderr=subprocess.STDOUT, cwd=cwd or REPO)
    proc._log_handle = handle  # type: ignore[attr-defined]
    return proc


def automtd(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "automtd"), *args]


def run(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120, cwd: Path | None = None):
    return subprocess.run(
        list(cmd), env=_process_env(env or {}), capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO
    )


def wait_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p._log_handle.close()  # type: ignore[attr-defined]
    return codes


def kill_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()


def poll(fn: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def logs(paths: Sequence[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in paths if p.exists())
