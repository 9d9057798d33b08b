"""Where the team's tracking server lives: its folder, ports, database and URIs.

Shared by ``python -m pipeline.server`` (which starts and stops it) and
``python -m pipeline.prune`` (which purges deleted runs from its database).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: Ports apart from the defaults (5432, 5000), so that a PostgreSQL or an MLflow UI of
#: the machine's own may run beside them.
PG_PORT = 55432
SERVER_PORT = 5055
DATABASE = "mlflow"
AUTH_DATABASE = "mlflow_auth"  # the login app's users, apart from the runs (their own migrations)
ROLE = "downhill"
#: How long ``start`` waits for each program to answer.
START_SECONDS = 120.0


@dataclass(frozen=True)
class ServerPlace:
    """Where a team server lives: its folder and its two ports on 127.0.0.1."""

    folder: Path
    pg_port: int = PG_PORT
    port: int = SERVER_PORT

    @property
    def data(self) -> Path:
        return self.folder / "postgres"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def password_file(self) -> Path:
        return self.folder / "pgpass"

    @property
    def pid_file(self) -> Path:
        return self.folder / "mlflow.pid"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The database's URI, without its password (that comes from ``PGPASSFILE``)."""
        return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{self.pg_port}/{DATABASE}"


def save_place(place: ServerPlace, auth: bool) -> None:
    """Note the ports and whether logins are on in the server's folder, for commands that
    find it by its folder and for a second ``start`` (which must not silently differ)."""
    settings = {"port": place.port, "pg_port": place.pg_port, "auth": auth}
    (place.folder / "place.json").write_text(json.dumps(settings) + "\n")


def load_place(folder: Path) -> ServerPlace | None:
    """The team server whose folder is ``folder``, as it was last started; None if none was."""
    try:
        ports = json.loads((folder / "place.json").read_text())
    except (OSError, ValueError):
        return None
    return ServerPlace(folder.resolve(), int(ports["pg_port"]), int(ports["port"]))


def logins_on(folder: Path) -> bool:
    """Whether the server of ``folder`` was last started with logins (``--auth``)."""
    try:
        return bool(json.loads((folder / "place.json").read_text()).get("auth", False))
    except (OSError, ValueError):
        return False


def default_place() -> ServerPlace:
    """The project's own team server: ``.server/`` in the project, the default ports."""
    return ServerPlace(Path(__file__).resolve().parents[1] / ".server")
