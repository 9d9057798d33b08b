"""A team's tracking server, one command away: PostgreSQL and an MLflow server on this machine.

    python -m pipeline.server start     # or: make server
    python -m pipeline.server status    # or: make server-status
    python -m pipeline.server stop      # or: make server-stop

``start`` makes (once) a PostgreSQL cluster from Debian's ``postgresql`` package in
``.server/postgres`` (git-ignored), starts it on 127.0.0.1 on a port of its own, then
``mlflow server`` with its runs in that database and its artifacts in
``.server/artifacts``, and waits until the server answers. It prints the
``MLFLOW_TRACKING_URI`` to export; every command of the pipeline then tracks into the
server. Running it twice is safe: the second call finds both running and says so.
``stop`` stops both and leaves no process behind.

The database's password is made at the first start and kept in ``.server/pgpass``
(mode 0600); it reaches PostgreSQL's client library through ``PGPASSFILE`` and the
server through its environment, never its command line, a URI or a log.

Nothing here is a pipeline stage: it only starts and stops programs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import PipelineError, exit_on_error
from pipeline.team import (
    AUTH_DATABASE,
    DATABASE,
    PG_PORT,
    ROLE,
    SERVER_PORT,
    START_SECONDS,
    ServerPlace,
    default_place,
    load_place,
    logins_on,
    save_place,
)


def postgres_bin(program: str) -> Path:
    """A PostgreSQL server program (``initdb``, ``pg_ctl``) from Debian's package, newest version."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{program}"), key=lambda path: int(path.parts[-3])
    )
    if not versions:
        raise PipelineError(
            f"PostgreSQL's {program} is not installed: install Debian's package with "
            "`sudo apt-get install postgresql` (or `make postgres`)"
        )
    return versions[-1]


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run ``command`` as the ``postgres`` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _owner_folder(path: Path) -> None:
    """Make ``path``, owned by the user PostgreSQL runs as, private to it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o700)


def _client_environment(place: ServerPlace) -> dict[str, str]:
    return os.environ | {"PGPASSFILE": str(place.password_file)}


def _run(command: list[str], what: str, env: dict[str, str] | None = None, log: Path | None = None) -> str:
    """Run ``command``; if it fails, one line: the last line it (or its ``log``) printed."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        if log is not None and log.is_file():
            detail = [*detail, *log.read_text(errors="replace").strip().splitlines()[-1:]]
            detail[-1] += f" (see {log})"
        raise PipelineError(f"{what} failed: {detail[-1] if detail else f'exit {done.returncode}'}")
    return done.stdout


def check_reachable(folder: Path) -> None:
    """As root, PostgreSQL runs as ``postgres``: refuse a folder that user cannot reach
    (under a private home folder, say) before anything is made in it."""
    if os.geteuid() != 0:
        return
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(existing)]).returncode != 0:
        raise PipelineError(
            f"--folder {folder}: PostgreSQL runs as the user postgres, which cannot reach {existing}; "
            "give a --folder it can reach (e.g. under /srv or /tmp), or let it pass (chmod o+x each folder)"
        )


def port_user(port: int) -> str | None:
    """What listens on ``port`` of 127.0.0.1 (``name, process N``), or None if nothing does."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) != 0:
            return None
    found = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', found)
    return f"{match.group(1)}, process {match.group(2)}" if match else "another program"


def require_free(port: int, option: str) -> None:
    user = port_user(port)
    if user is not None:
        raise PipelineError(
            f"port {port} on 127.0.0.1 is taken ({user}): stop it, or give another with {option}"
        )


def postgres_running(place: ServerPlace) -> bool:
    if not (place.data / "PG_VERSION").is_file():
        return False
    done = subprocess.run(
        _as_postgres([str(postgres_bin("pg_ctl")), "status", "-D", str(place.data)]),
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


def start_postgres(place: ServerPlace) -> None:
    """Make the cluster and the database once; start PostgreSQL on 127.0.0.1 only."""
    place.folder.mkdir(parents=True, exist_ok=True)
    place.folder.chmod(0o755)  # the postgres user must reach its data folder
    if not (place.data / "PG_VERSION").is_file():
        password = secrets.token_urlsafe(24)
        _owner_folder(place.data)
        setup = place.folder / ".initial-password"  # initdb wants its folder empty
        setup.write_text(password + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(setup, user.pw_uid, user.pw_gid)
        setup.chmod(0o600)
        try:
            _run(
                _as_postgres(
                    [
                        str(postgres_bin("initdb")),
                        "-D",
                        str(place.data),
                        "-U",
                        ROLE,
                        f"--pwfile={setup}",
                        "--auth-host=scram-sha-256",
                        "--auth-local=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-instructions",
                    ]
                ),
                "initdb",
            )
        finally:
            setup.unlink(missing_ok=True)
        place.password_file.write_text(f"127.0.0.1:{place.pg_port}:*:{ROLE}:{password}\n")
        place.password_file.chmod(0o600)
    if postgres_running(place):
        return
    require_free(place.pg_port, "--pg-port")
    options = f"-c listen_addresses=127.0.0.1 -p {place.pg_port} -c unix_socket_directories=''"
    _run(
        _as_postgres(
            [
                str(postgres_bin("pg_ctl")),
                "start",
                "-D",
                str(place.data),
                "-l",
                str(place.data / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(int(START_SECONDS)),
            ]
        ),
        "pg_ctl start",
        log=place.data / "server.log",
    )
    _ensure_database(place)


def _ensure_database(place: ServerPlace) -> None:
    """The runs' database and the login app's, made once."""
    psql = shutil.which("psql") or "psql"
    connect = ["-h", "127.0.0.1", "-p", str(place.pg_port), "-U", ROLE, "-d", "postgres", "-tA"]
    env = _client_environment(place)
    for name in (DATABASE, AUTH_DATABASE):
        query = f"SELECT 1 FROM pg_database WHERE datname = '{name}'"
        if _run([psql, *connect, "-c", query], "psql", env).strip() != "1":
            _run([psql, *connect, "-c", f"CREATE DATABASE {name}"], "psql CREATE DATABASE", env)


def stop_postgres(place: ServerPlace) -> None:
    if postgres_running(place):
        _run(
            _as_postgres([str(postgres_bin("pg_ctl")), "stop", "-D", str(place.data), "-m", "fast", "-w"]),
            "pg_ctl stop",
        )


def _server_pid(place: ServerPlace) -> int | None:
    """The MLflow server's process id, if it is running (its pid file may be stale)."""
    try:
        pid = int(place.pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def answers(uri: str, timeout: float = 2.0) -> bool:
    """Whether an MLflow server at ``uri`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def start_server(place: ServerPlace, auth: bool = False) -> None:
    """Start ``mlflow server`` on 127.0.0.1 with one worker; wait until it answers."""
    if _server_pid(place) is not None and answers(place.uri):
        return
    require_free(place.port, "--port")
    place.artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--artifacts-destination",
        str(place.artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(place.port),
        # Four workers cost 2.5 GB idle and a delay on every call on 2 cores.
        "--workers",
        "1",
    ]
    if auth:
        command += ["--app-name", "basic-auth"]
    env = _client_environment(place) | {
        "MLFLOW_BACKEND_STORE_URI": place.backend_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    if auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_config(place))
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = os.environ["MLFLOW_TRACKING_PASSWORD"]
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = _secret(place.folder / "flask_secret")
    log_file = (place.folder / "mlflow.log").open("ab")
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: stop ends the workers with it
    )
    place.pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            lines = (place.folder / "mlflow.log").read_text(errors="replace").strip().splitlines()
            errors = [line for line in lines if "Error" in line or "Exception" in line] or lines
            raise PipelineError(
                f"mlflow server exited ({process.returncode}): {errors[-1] if errors else 'no output'}; "
                f"see {place.folder / 'mlflow.log'}"
            )
        if answers(place.uri):
            return
        time.sleep(0.5)
    stop_server(place)
    raise PipelineError(f"mlflow server did not answer at {place.uri} within {START_SECONDS:.0f} s")


def _auth_config(place: ServerPlace) -> Path:
    """The basic-auth app's settings: its users in a database of their own beside the runs'.

    The admin is ``MLFLOW_TRACKING_USERNAME``; the password reaches the server through
    its environment (``MLFLOW_AUTH_ADMIN_PASSWORD``), never a file.
    """
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise PipelineError(
            "--auth: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the admin's login) first"
        )
    path = place.folder / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {place.backend_uri.rsplit('/', 1)[0]}/{AUTH_DATABASE}\n"
        f"admin_username = {os.environ['MLFLOW_TRACKING_USERNAME']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)
    return path


def _secret(path: Path) -> str:
    """A random key kept in ``path`` (mode 0600): the same across restarts of the server."""
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def stop_server(place: ServerPlace) -> None:
    """Stop the MLflow server and every worker it started."""
    pid = _server_pid(place)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    place.pid_file.unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def status(place: ServerPlace) -> str:
    """One line per program: running or not, and where."""
    database = (
        f"PostgreSQL: running on 127.0.0.1:{place.pg_port} ({place.data})"
        if postgres_running(place)
        else "PostgreSQL: stopped"
    )
    pid = _server_pid(place)
    if pid is None:
        server = "MLflow server: stopped"
    elif answers(place.uri):
        logins = "on" if logins_on(place.folder) else "off"
        server = f"MLflow server: running at {place.uri} (process {pid}), logins {logins}"
    else:
        server = f"MLflow server: process {pid} is not answering at {place.uri}"
    return f"{database}\n{server}"


def start(place: ServerPlace, auth: bool) -> None:
    """Start both programs, or find them running with the same settings; on failure,
    leave nothing running that this call started."""
    if _server_pid(place) is not None and answers(place.uri):
        running_with_logins = logins_on(place.folder)
        if running_with_logins != auth:
            running, wanted = ("on", "off") if running_with_logins else ("off", "on")
            raise PipelineError(
                f"the team server at {place.uri} is running with logins {running}; stop it first "
                f"(`python -m pipeline.server stop`) to start it with logins {wanted}"
            )
        return
    check_reachable(place.folder)
    if auth:
        _auth_config(place)  # the login's variables, checked before anything starts
    was_running = postgres_running(place)
    try:
        start_postgres(place)
        save_place(place, auth)
        start_server(place, auth=auth)
    except BaseException:
        if not was_running:
            with contextlib.suppress(Exception):
                stop_postgres(place)
        raise


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.server", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--folder", type=Path, default=default_place().folder, help="default: .server/")
    parser.add_argument(
        "--port", type=int, help=f"the MLflow server's port (default: as last started, or {SERVER_PORT})"
    )
    parser.add_argument(
        "--pg-port", type=int, help=f"PostgreSQL's port (default: as last started, or {PG_PORT})"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require a login (MLflow's basic-auth app); the admin is MLFLOW_TRACKING_USERNAME",
    )
    arguments = parser.parse_args(argv)
    folder = arguments.folder.resolve()
    last = load_place(folder) or ServerPlace(folder)  # the folder's own ports, unless given
    place = ServerPlace(folder, arguments.pg_port or last.pg_port, arguments.port or last.port)
    if arguments.action == "start":
        start(place, arguments.auth)
        print(status(place))
        print(f"export MLFLOW_TRACKING_URI={place.uri}")
    elif arguments.action == "stop":
        stop_server(place)
        stop_postgres(place)
        print(status(place))
    else:
        print(status(place))


if __name__ == "__main__":
    main()
