"""The production topology from real processes on loopback, without a container engine.

    scripts/cluster up [--instances 3] [--workers 2] [--port 8088]   start it, print where it listens
    scripts/cluster status [--json]                                   what runs, and is it ready
    scripts/cluster down                                              stop it and drop its database

What ``up`` starts, as docker-compose.yml does:

- a database of its own (``bs_cluster_<random>``) on the PostgreSQL server at ``BUILDSTATE_CLUSTER_PG``
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``), migrated once;
- ``--instances`` ``buildstate serve`` processes with ``--workers`` workers each, on free loopback ports,
  in production mode, sharing one JWT secret and one webhook key as a real deployment's instances do;
- nginx, from ``deploy/nginx/nginx.conf`` itself with only the upstream servers, the listen address and
  the file paths rewritten (so the proxy rules tested here are the ones shipped), as a foreground
  (``daemon off``) process. nginx is installed with apt-get if it is missing and this runs as root.

Everything lives in ``--dir`` (default ``artifacts/cluster``): ``cluster.json`` (ports, pids, database),
``instance-N.log`` (JSON logs), ``nginx/`` (config, access and error logs). The tests in ``tests/cluster``
use the same functions (``up``, ``down``, ``Cluster.stop_instance``...) directly.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv/bin/buildstate"
NGINX_CONF = ROOT / "deploy/nginx/nginx.conf"
DEFAULT_DIR = ROOT / "artifacts/cluster"
PG_ADMIN = os.environ.get("BUILDSTATE_CLUSTER_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
STATE_FILE = "cluster.json"
# Processes this Python process started, by pid: kept so they are waited for (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _kill_leftovers() -> None:
    """If a test run is cut short before ``down``, take its instances and nginx with it. (The `up`
    command leaves them running on purpose: it exits before this with nothing registered.)"""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET, or None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs only
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"gave up after {seconds:.0f}s waiting for {what}")


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def stop_process_group(pid: int, sig: signal.Signals = signal.SIGTERM, wait: float = 30.0) -> None:
    """Signal a process and its group (a gunicorn master and its workers); SIGKILL if it outstays."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.1)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
    _reap(pid)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _pg(statement: str, admin_url: str) -> None:
    import asyncpg  # noqa: PLC0415 - the project's own driver, from its venv

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def ensure_nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str, check: bool) -> int:
        done = subprocess.run(["apt-get", *args], env=env, capture_output=True, check=check)
        return done.returncode

    if apt("install", "-y", "-qq", "nginx", check=False) != 0:  # the package lists may be missing or old
        apt("update", "-qq", check=True)
        apt("install", "-y", "-qq", "nginx", check=True)
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise RuntimeError("apt-get install nginx did not provide an nginx binary")
    return found


def nginx_config(instance_ports: list[int], listen_port: int, workdir: Path) -> str:
    """deploy/nginx/nginx.conf with loopback upstreams and private paths; everything else as shipped."""
    text = NGINX_CONF.read_text()
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;" for port in instance_ports
    )
    temp_paths = "".join(
        f"    {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    replacements = [
        ("pid /var/run/nginx.pid;", f"pid {workdir / 'nginx.pid'};"),
        ("worker_processes auto;", "worker_processes 2;"),
        (
            "access_log /var/log/nginx/access.log buildstate;",
            f"access_log {workdir / 'access.log'} buildstate;",
        ),
        ("error_log /var/log/nginx/error.log warn;", f"error_log {workdir / 'error.log'} warn;"),
        ("    resolver 127.0.0.11 valid=10s ipv6=off;\n", ""),
        ("        server api:8080 resolve max_fails=3 fail_timeout=10s;", servers),
        ("        listen 8080;", f"        listen 127.0.0.1:{listen_port};"),
        ("http {\n", "http {\n" + temp_paths),
    ]
    for old, new in replacements:
        if text.count(old) != 1:
            raise RuntimeError(f"deploy/nginx/nginx.conf changed: expected {old.strip()!r} exactly once")
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------------- the cluster


@dataclass
class Instance:
    index: int
    port: int
    data_dir: str
    log: str
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    state_dir: str
    port: int
    workers: int
    database: str
    database_url: str
    admin_url: str
    jwt_secret: str
    webhook_key: str
    nginx_pid: int | None = None
    instances: list[Instance] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def nginx_dir(self) -> Path:
        return Path(self.state_dir) / "nginx"

    def env(self, instance: Instance | None = None) -> dict[str, str]:
        """The environment of an instance (or of a CLI command against the cluster's database)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDSTATE_", "PROMETHEUS_"))}
        env.update(
            BUILDSTATE_ENV="production",
            BUILDSTATE_DATABASE_URL=self.database_url,
            BUILDSTATE_JWT_SECRET=self.jwt_secret,
            BUILDSTATE_WEBHOOK_KEY=self.webhook_key,
            BUILDSTATE_WORKERS=str(self.workers),
            BUILDSTATE_LOG_FORMAT="json",
            BUILDSTATE_DATA_DIR=instance.data_dir if instance else str(Path(self.state_dir) / "cli"),
        )
        if instance is not None:
            env["BUILDSTATE_METRICS_DIR"] = str(Path(instance.data_dir) / "metrics")
        return env

    def save(self) -> None:
        (Path(self.state_dir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Cluster:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        raw["instances"] = [Instance(**i) for i in raw["instances"]]
        return cls(**raw)

    # ------------------------------------------------------------------ processes

    def start_instance(self, index: int) -> Instance:
        instance = self.instances[index]
        Path(instance.data_dir).mkdir(parents=True, exist_ok=True)
        with Path(instance.log).open("ab") as log:
            process = subprocess.Popen(
                [str(CLI), "serve", "--bind", f"127.0.0.1:{instance.port}", "--workers", str(self.workers)],
                env=self.env(instance),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop it (master and workers) as one
            )
        instance.pid = process.pid
        _CHILDREN[process.pid] = process
        self.save()
        return instance

    def wait_ready(self, index: int, seconds: float = 60) -> None:
        instance = self.instances[index]

        def ready() -> bool:
            if not alive(instance.pid):
                raise RuntimeError(f"instance {index} exited; see {instance.log}")
            return http_status(f"{instance.url}/ready") == 200

        wait_for(ready, seconds, f"instance {index} on {instance.url}")

    def stop_instance(self, index: int, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM drains (gunicorn's graceful stop); SIGKILL is a crash of the whole instance."""
        instance = self.instances[index]
        if instance.pid is not None:
            stop_process_group(instance.pid, sig)
        instance.pid = None
        self.save()

    def start_nginx(self) -> None:
        binary = ensure_nginx()
        self.nginx_dir.mkdir(parents=True, exist_ok=True)
        conf = self.nginx_dir / "nginx.conf"
        conf.write_text(nginx_config([i.port for i in self.instances], self.port, self.nginx_dir))
        command = [
            binary,
            "-p",
            str(self.nginx_dir),
            "-c",
            str(conf),
            "-e",
            str(self.nginx_dir / "error.log"),
        ]
        subprocess.run([*command, "-t", "-q"], check=True, capture_output=True)
        with (self.nginx_dir / "stderr.log").open("ab") as stderr:
            process = subprocess.Popen(
                [*command, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.nginx_pid = process.pid
        _CHILDREN[process.pid] = process
        self.save()
        wait_for(lambda: http_status(f"{self.url}/nginx-health") == 200, 20, f"nginx on {self.url}")

    def create_key(self, *scopes: str, name: str = "cluster") -> str:
        """An API key made as an operator makes one: ``buildstate keys create`` prints it last."""
        scope_args = [arg for scope in scopes or ("read", "write", "admin") for arg in ("--scope", scope)]
        created = subprocess.run(
            [str(CLI), "keys", "create", "--name", name, *scope_args],
            env=self.env(), capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return created.stdout.strip().splitlines()[-1]

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "database": self.database,
            "nginx": {"pid": self.nginx_pid, "alive": alive(self.nginx_pid)},
            "ready_through_nginx": http_status(f"{self.url}/ready"),
            "instances": [
                {
                    "index": i.index,
                    "url": i.url,
                    "pid": i.pid,
                    "alive": alive(i.pid),
                    "ready": http_status(f"{i.url}/ready"),
                }
                for i in self.instances
            ],
        }


def up(
    state_dir: Path = DEFAULT_DIR,
    *,
    instances: int = 3,
    workers: int = 2,
    port: int | None = None,
    admin_url: str = PG_ADMIN,
) -> Cluster:
    if (state_dir / STATE_FILE).exists():
        raise RuntimeError(f"a cluster is already described in {state_dir}; run `scripts/cluster down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    database = f"bs_cluster_{secrets.token_hex(4)}"
    base, _, _ = admin_url.rpartition("/")
    cluster = Cluster(
        state_dir=str(state_dir),
        port=port or free_port(),
        workers=workers,
        database=database,
        database_url=f"{base}/{database}",
        admin_url=admin_url,
        jwt_secret=secrets.token_urlsafe(48),
        webhook_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),  # a Fernet key
    )
    for index in range(instances):
        cluster.instances.append(
            Instance(
                index=index,
                port=free_port(),
                data_dir=str(state_dir / f"instance-{index}"),
                log=str(state_dir / f"instance-{index}.log"),
            )
        )
    cluster.save()
    try:
        _pg(f'CREATE DATABASE "{database}"', admin_url)
        # Once, before the instances: each would migrate too (safely), but the start is quicker this way.
        subprocess.run([str(CLI), "migrate"], env=cluster.env(), check=True, capture_output=True, timeout=120)
        for index in range(instances):
            cluster.start_instance(index)
        for index in range(instances):
            cluster.wait_ready(index)
        cluster.start_nginx()
    except BaseException:
        down(cluster)
        raise
    return cluster


def down(cluster: Cluster) -> None:
    for instance in cluster.instances:
        if instance.pid is not None:
            stop_process_group(instance.pid, signal.SIGTERM)
            instance.pid = None
    if cluster.nginx_pid is not None:
        stop_process_group(cluster.nginx_pid, signal.SIGQUIT, wait=10)  # SIGQUIT: nginx's graceful stop
        cluster.nginx_pid = None
    try:
        _pg(f'DROP DATABASE IF EXISTS "{cluster.database}" WITH (FORCE)', cluster.admin_url)
    except OSError as error:
        print(f"could not drop {cluster.database}: {error}", file=sys.stderr)
    state = Path(cluster.state_dir) / STATE_FILE
    state.unlink(missing_ok=True)


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="state and logs (default: artifacts/cluster)"
    )
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser(
        "up", parents=[where], help="start a PostgreSQL database, instances and nginx"
    )
    start.add_argument("--instances", type=int, default=3)
    start.add_argument("--workers", type=int, default=2)
    start.add_argument("--port", type=int, default=8088, help="nginx's port on 127.0.0.1 (default 8088)")
    status = commands.add_parser("status", parents=[where], help="what runs and whether it is ready")
    status.add_argument("--json", action="store_true")
    commands.add_parser("key", parents=[where], help="create an API key (read, write, admin) and print it")
    commands.add_parser("down", parents=[where], help="stop everything and drop the database")
    args = parser.parse_args(argv)

    if args.command == "up":
        cluster = up(args.dir, instances=args.instances, workers=args.workers, port=args.port)
        _CHILDREN.clear()  # they outlive this command: `down` stops them
        print(f"buildstate cluster on {cluster.url} (nginx, least_conn) over:")
        for instance in cluster.instances:
            print(f"  instance {instance.index}: {instance.url}  pid {instance.pid}  log {instance.log}")
        print(f"database {cluster.database}; API key: scripts/cluster key; stop: scripts/cluster down")
        return 0
    if not (args.dir / STATE_FILE).exists():
        print(f"no cluster in {args.dir}", file=sys.stderr)
        return 1 if args.command == "status" else 0
    cluster = Cluster.load(args.dir)
    if args.command == "key":
        print(cluster.create_key())
        return 0
    if args.command == "down":
        down(cluster)
        print(f"stopped; dropped {cluster.database}; logs kept in {cluster.state_dir}")
        return 0
    report = cluster.status()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['url']}  nginx pid {report['nginx']['pid']} alive={report['nginx']['alive']}  "
              f"/ready through nginx: {report['ready_through_nginx']}")  # fmt: skip
        for i in report["instances"]:
            print(
                f"  instance {i['index']}: {i['url']} pid {i['pid']} alive={i['alive']} /ready: {i['ready']}"
            )
    healthy = report["ready_through_nginx"] == 200 and all(i["alive"] for i in report["instances"])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
