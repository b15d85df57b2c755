"""A real local Flower 1.42 deployment on 127.0.0.1: one SuperLink, N SuperNodes, the ``flwr`` CLI.

:class:`Deployment` runs Flower's own executables with nothing of ours between them: a message
from a ServerApp to a ClientApp goes through Flower's SuperLink, SuperNodes and SuperExecs as in
production, only on the loopback interface. Each process leads its own process group
(``start_new_session``), has no stdin and writes stdout and stderr to ``<log_dir>/<name>.log``:

``superlink``
    ``flower-superlink --host 127.0.0.1 --port P --database <workdir>/superlink.db
    --disable-runtime-dependency-installation``. Serves the Fleet, Control and Runtime
    (ServerAppIo) APIs, all over HTTP on the one port P since Flower 1.42, and starts a
    flower-superexec that runs each ServerApp as a flwr-serverapp process; that SuperExec
    detaches into a session of its own, and stop() finds it in /proc as our descendant.
``supernode-<i>``
    ``flower-supernode --superlink 127.0.0.1:P --host 127.0.0.1 --port Q_i --node-config FILE``
    (``partition-id=i num-partitions=N``, then ``node_configs[i]``). Serves its Runtime
    (ClientAppIo) API on Q_i; its flower-superexec runs one flwr-clientapp process per message,
    all in the SuperNode's process group, so ``kill_node(i)`` takes them all at once.
``flwr-<k>``
    the ``flwr`` CLI (run, ls, log, stop) against the SuperLink connection ``secureagg-local``
    written to ``$FLWR_HOME/config.toml``.

Ports P and Q_i are picked free on 127.0.0.1 (bound to port 0 together, then released) just
before the start; nothing listens on another address. Children get ``FLWR_HOME=<workdir>/flwr-
home``, ``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_DISABLE_UPDATE_CHECK=1`` (nothing leaves the
machine), and PATH led by the Flower executables' directory (``flower-superexec`` is started by
name). Ready means the SuperLink accepts TCP connections on P and every SuperNode has logged its
``SuperNode ID`` (registered and activated); ``node_ids[i]`` is that id.

TLS (``tls=True``): a throwaway CA and a server certificate for 127.0.0.1 and localhost (ECDSA
P-256, by ``cryptography``, valid two days, key file 0600). The SuperLink serves every API over
HTTPS with it, as does each SuperNode's Runtime API; SuperNodes, SuperExecs and the CLI verify it
against the CA (``--root-certificates``, ``root-certificates`` in config.toml). That is
confidentiality and server authentication on each loopback link, not node authentication.

Stop (``stop()``; ``__exit__``, also after an exception or KeyboardInterrupt; an ``atexit``
fallback; idempotent): note every live descendant of our processes (pid and start time from
/proc, so a reused pid is never signalled), SIGTERM our process groups and the groups such a
descendant leads, wait up to ``stop_timeout`` s, SIGKILL what is left and reap our children
(orphaned grandchildren are dead, init reaps them); :class:`DeploymentError` names a survivor.
Nothing else is ever signalled: never by name, no group we did not create or find under ours.

Example::

    with Deployment(3) as dep:
        dep.run(app_dir, run_config={"num-server-rounds": 1}, timeout=120).check()
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import importlib.metadata
import importlib.util
import ipaddress
import json
import numbers
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secureagg.errors import ConfigurationError, MissingDependencyError, SecureAggError

__all__ = ["CONNECTION", "ConfigValue", "Deployment", "DeploymentError", "RunOutcome"]

CONNECTION = "secureagg-local"
"""The SuperLink connection in $FLWR_HOME/config.toml: ``flwr run APP secureagg-local``."""

ConfigValue: TypeAlias = str | int | float | bool
_SCRIPTS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr")
_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_CLI_NOISE = ("Starting logstream", "Using SuperLink", "All logs for run")
_TERMINATING = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


class DeploymentError(SecureAggError, RuntimeError):
    """A Flower process did not start, exited early or did not stop, or a run did not complete."""


@dataclass(frozen=True)
class RunOutcome:
    """What ``flwr run`` did. ``status`` is Flower's (``finished:completed``, ``finished:failed``,
    ``finished:stopped``), ``timeout`` (we stopped the CLI and the run) or ``not-started`` (no
    run id; see ``cli_output``); ``details`` is Flower's status detail (a failed ServerApp's
    exception); ``log`` the ServerApp's log as Flower streamed it; ``returncode`` the CLI's exit
    code (None when we stopped it); ``seconds`` the wall time of :meth:`Deployment.run`."""

    run_id: int | None
    returncode: int | None
    status: str
    details: str
    log: str
    cli_output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed" and self.returncode == 0

    def check(self) -> RunOutcome:
        """Return self if the run completed, else raise :class:`DeploymentError` with the log."""
        if not self.ok:
            raise DeploymentError(
                f"Flower run {self.run_id}: {self.status} (flwr exit code {self.returncode}, "
                f"{self.seconds:.1f} s): {self.details}\n--- log tail ---\n"
                + _tail(self.log or self.cli_output)
            )
        return self


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _toml_table(values: Mapping[str, object], what: str) -> str:
    """Flat ``key = value`` TOML lines; Flower's config values are bool, int, float and str."""
    lines, problems = [], []
    for key, value in values.items():
        if not isinstance(key, str) or not _KEY.match(key):
            problems.append(f"{what}: key {key!r} must be letters, digits, '-' or '_'")
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, numbers.Integral):
            lines.append(f"{key} = {int(value)}")
        elif isinstance(value, numbers.Real):
            lines.append(f"{key} = {float(value)!r}")  # nan, inf and -inf are TOML too
        elif isinstance(value, str):  # a JSON string is a TOML basic string, except for DEL
            lines.append(f"{key} = " + json.dumps(value).replace("\x7f", "\\u007f"))
        else:
            problems.append(f"{what}: {key} = {value!r} is not a bool, int, float or str")
    if problems:
        raise ConfigurationError(problems)
    return "".join(line + "\n" for line in lines)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _find_scripts() -> dict[str, Path]:
    if importlib.util.find_spec("flwr") is None:
        raise MissingDependencyError("flwr", "flower", purpose="a local Flower deployment")
    version = importlib.metadata.version("flwr")
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < (1, 42):
        raise ConfigurationError(
            f"Deployment drives Flower >= 1.42 (one HTTP port per SuperLink), found flwr "
            f"{version}; upgrade it with: pip install -U 'secureagg[flower]'"
        )
    found, missing = {}, []
    for name in _SCRIPTS:
        beside = Path(sys.executable).parent / name
        where = beside if beside.is_file() else shutil.which(name)
        if where is None:
            missing.append(name)
        else:
            found[name] = Path(where)
    if missing:
        raise ConfigurationError(
            f"Flower's executables {missing} are neither beside {sys.executable} nor on PATH; "
            "install Flower into this environment with: pip install 'secureagg[flower]'"
        )
    return found


def _write_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secureagg throwaway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())

    def cert(name: str | None, public: ec.EllipticCurvePublicKey, *extensions: x509.ExtensionType
             ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]) if name else ca_name
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        for ext in extensions:
            critical = isinstance(ext, x509.BasicConstraints | x509.KeyUsage)
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(not sign, False, False, False, False, sign, sign, False, False)

    ca = cert(None, ca_key.public_key(), x509.BasicConstraints(ca=True, path_length=0), usage(True))
    server = cert(
        "127.0.0.1", key.public_key(), x509.BasicConstraints(ca=False, path_length=None),
        usage(False), x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    with os.fdopen(os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return paths


def _proc_table() -> dict[int, tuple[int, int, str, int]]:
    """pid -> (ppid, pgid, state, start time) of every process, from /proc (empty elsewhere)."""
    table = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path("/proc", entry, "stat").read_text()
                except OSError:
                    continue  # it exited meanwhile
                rest = stat[stat.rfind(")") + 2 :].split()
                table[int(entry)] = (int(rest[1]), int(rest[2]), rest[0], int(rest[19]))
    return table


class Deployment:
    """A SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1, run as real Flower processes.

    ``node_configs[i]`` is added to SuperNode i's node config after ``partition-id=i
    num-partitions=num_nodes`` (and may override them). ``superlink_database`` is ``"file"``
    (``<workdir>/superlink.db``, for tests to read), ``"memory"`` or a path. ``workdir=None``
    makes a temporary directory that stop() removes unless ``keep_workdir``; ``log_dir``
    defaults to ``<workdir>/logs``. start() waits up to ``ready_timeout`` s for readiness, stop()
    up to ``stop_timeout`` s after SIGTERM before SIGKILL.
    """

    def __init__(
        self, num_nodes: int, *, workdir: Path | None = None, tls: bool = False,
        node_configs: Sequence[Mapping[str, ConfigValue]] | None = None,
        superlink_database: str = "file", log_dir: Path | None = None,
        ready_timeout: float = 60, stop_timeout: float = 5, keep_workdir: bool = False,
    ) -> None:
        problems = []
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            problems.append(f"num_nodes must be a positive int, got {num_nodes!r}")
        elif node_configs is not None and len(node_configs) != num_nodes:
            problems.append(f"node_configs has {len(node_configs)} entries for {num_nodes} nodes")
        if not (ready_timeout > 0 and stop_timeout > 0):
            problems.append("ready_timeout and stop_timeout must be positive")
        if problems:
            raise ConfigurationError(problems)
        self.num_nodes, self.tls = num_nodes, tls
        self.ready_timeout, self.stop_timeout = float(ready_timeout), float(stop_timeout)
        self._node_configs = [dict(c) for c in node_configs or [{}] * num_nodes]
        for i, extra in enumerate(self._node_configs):
            _toml_table(extra, f"node_configs[{i}]")  # refuse bad values now, not in start()
        self._database = superlink_database
        self._given_workdir, self._given_log_dir = workdir, log_dir
        self._keep_workdir = keep_workdir or workdir is not None
        self._procs: dict[str, _Proc] = {}  # started and not yet known gone
        self._done: dict[str, _Proc] = {}  # reaped, their process group seen empty
        self._descendants: dict[int, int] = {}  # pid -> start time, outside our groups
        self._counter = 0
        self._state = "new"
        self.node_ids: list[int] = []  # Flower's node id of SuperNode i, once ready
        self.port, self.node_ports = 0, list[int]()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Deployment:
        """Start the SuperLink and the SuperNodes, and wait until all are ready."""
        if self._state != "new":
            raise DeploymentError(f"a Deployment starts once; this one is {self._state}")
        scripts = _find_scripts()
        self._state = "starting"
        atexit.register(self._atexit_stop)
        try:
            self._start(scripts)
        except BaseException:
            with contextlib.suppress(DeploymentError):
                self.stop()
            raise
        self._state = "running"
        return self

    def _start(self, scripts: dict[str, Path]) -> None:
        given = self._given_workdir
        self.workdir = Path(given or tempfile.mkdtemp(prefix="secureagg-flower-")).resolve()
        self.log_dir = Path(self._given_log_dir or self.workdir / "logs").resolve()
        self.flwr_home = self.workdir / "flwr-home"
        for directory in (self.workdir, self.log_dir, self.flwr_home):
            directory.mkdir(parents=True, exist_ok=True)
        self._scripts = scripts
        path = f"{scripts['flower-superexec'].parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self._env = {**os.environ, "PATH": path, "FLWR_HOME": str(self.flwr_home),
                     "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                     "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}  # rich: no wrapped errors
        self.port, *self.node_ports = _free_ports(1 + self.num_nodes)
        link_tls = server_tls = ["--insecure"]
        connection = f'address = "{self.address}"\ninsecure = true\n'
        if self.tls:
            ca, cert, key = (str(p) for p in _write_tls(self.workdir))
            server_tls = ["--ssl-ca-certfile", ca, "--ssl-certfile", cert, "--ssl-keyfile", key]
            link_tls = ["--root-certificates", ca, *server_tls]
            connection = f'address = "{self.address}"\nroot-certificates = {json.dumps(ca)}\n'
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n{connection}',
            encoding="utf-8")
        database = self.superlink_database
        self._spawn("superlink", [
            str(scripts["flower-superlink"]), *server_tls, "--host", "127.0.0.1",
            "--port", str(self.port), "--disable-runtime-dependency-installation",
            *(["--database", str(database)] if database else [])])
        for i in range(self.num_nodes):
            config = {"partition-id": i, "num-partitions": self.num_nodes, **self._node_configs[i]}
            config_file = self.workdir / f"node-config-{i}.toml"
            config_file.write_text(_toml_table(config, f"node_configs[{i}]"), encoding="utf-8")
            self._spawn(f"supernode-{i}", [
                str(scripts["flower-supernode"]), *link_tls, "--superlink", self.address,
                "--host", "127.0.0.1", "--port", str(self.node_ports[i]),
                "--node-config", str(config_file)])
        self._wait_ready(time.monotonic() + self.ready_timeout)
        self._track_descendants()

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log = (self.log_dir / f"{name}.log").open("ab")
        try:
            popen = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env, cwd=self.workdir, start_new_session=True)
        except BaseException:
            log.close()
            raise
        self._procs[name] = proc = _Proc(name, popen, log)
        return proc

    def _wait_ready(self, deadline: float) -> None:
        waiting = "superlink"
        while True:
            for proc in self._procs.values():
                if proc.popen.poll() is not None:
                    raise self._failure(f"{proc.name} exited ({proc.popen.returncode})", proc.name)
            if waiting == "superlink":
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", self.port), timeout=0.5):
                    waiting = "supernodes"
            if waiting != "superlink":
                ids = [_NODE_ID.search(self.log(f"supernode-{i}")) for i in range(self.num_nodes)]
                if all(ids):
                    self.node_ids = [int(m.group(1)) for m in ids if m]
                    return
                waiting = f"supernode-{[m is None for m in ids].index(True)}"
            if time.monotonic() > deadline:
                raise self._failure(f"{waiting} not ready after {self.ready_timeout:g} s", waiting)
            time.sleep(0.1)

    def _failure(self, what: str, name: str) -> DeploymentError:
        return DeploymentError(f"local Flower deployment: {what}\n--- {name}.log (tail) ---\n"
                               + _tail(self.log(name)))

    @property
    def address(self) -> str:
        """The SuperLink's Fleet, Control and Runtime API address (one HTTP port since 1.42)."""
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> dict[str, int]:
        """name -> pid of the SuperLink and the SuperNodes not killed (each leads its group)."""
        return {n: p.popen.pid for n, p in self._procs.items() if not n.startswith("flwr-")}

    def node_pid(self, i: int) -> int:
        """The pid (and process group id) of SuperNode i, also after kill_node(i)."""
        name = f"supernode-{i}"
        return (self._procs.get(name) or self._done[name]).popen.pid

    @property
    def superlink_database(self) -> Path | None:
        """The SuperLink's SQLite file (None for an in-memory SuperLink)."""
        if self._database == "memory":
            return None
        return self.workdir / "superlink.db" if self._database == "file" else Path(self._database)

    def log(self, name: str) -> str:
        """The output so far of process ``name`` (``superlink``, ``supernode-<i>``, ``flwr-<k>``)
        without ANSI colours. A SuperNode's log includes its SuperExec's and its ClientApps'."""
        path = self.log_dir / f"{name}.log"
        if not path.is_file():
            have = sorted(p.stem for p in self.log_dir.glob("*.log"))
            raise KeyError(f"no log named {name!r}; there are {have}")
        return _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))

    def kill_node(self, i: int, sig: int = signal.SIGKILL, *, timeout: float = 10) -> None:
        """Send ``sig`` to SuperNode i's process group (the SuperNode, its SuperExec, any
        ClientApp). For SIGKILL, SIGTERM and SIGINT, wait until the group is gone and reaped."""
        proc = self._procs[f"supernode-{i}"]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
        if sig in _TERMINATING:
            self._settle([proc.popen.pid], False, timeout, zombies=True)
            if proc.popen.poll() is None or self._alive([proc.popen.pid]):
                raise DeploymentError(f"supernode-{i} (pgid {proc.popen.pid}) survived {sig!r}")
            self._retire(proc)

    def flwr(self, *args: str, timeout: float = 60) -> tuple[int | None, str]:
        """Run ``flwr ARGS`` against this deployment: (its exit code, None if we stopped it at
        ``timeout``; its output)."""
        self._require_running()
        self._counter += 1
        name = f"flwr-{self._counter}"
        proc = self._spawn(name, [str(self._scripts["flwr"]), *args])
        try:
            code: int | None = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self._end(proc)
        return code, self.log(name)

    def run_status(self, run_id: int, *, timeout: float = 30) -> tuple[str, str]:
        """Flower's (status, status details) of a run, from ``flwr ls --run-id``."""
        code, out = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json",
                              timeout=timeout)
        try:
            run = json.loads(out[out.index("{") :])["runs"][0]
            return str(run["status"]), str(run.get("status-details", ""))
        except (ValueError, KeyError, IndexError, TypeError):
            return "unknown", f"flwr ls exited with {code}: {_tail(out, 10)}"

    def run(self, app_dir: Path, *, run_config: Mapping[str, ConfigValue] | None = None,
            timeout: float, stream: bool = True) -> RunOutcome:
        """``flwr run APP_DIR secureagg-local`` and wait up to ``timeout`` s for the run's end.

        With ``stream`` the CLI follows the ServerApp's log (``--stream``) until the run ends;
        otherwise we poll ``flwr ls`` and fetch the log with ``flwr log`` afterwards. At the
        timeout we stop the CLI (its process group) and the run (``flwr stop``), and the
        outcome's status is ``timeout``. The outcome is returned, not raised: see ``check()``."""
        self._require_running()
        start = time.monotonic()
        deadline = start + timeout
        args = ["run", str(Path(app_dir).resolve()), CONNECTION, *(["--stream"] if stream else [])]
        if run_config:
            config_file = self.workdir / f"run-config-{self._counter + 1}.toml"
            config_file.write_text(_toml_table(run_config, "run_config"), encoding="utf-8")
            args += ["--run-config", str(config_file)]
        code, out = self.flwr(*args, timeout=timeout)
        match = _RUN_ID.search(out)
        if match is None:
            return RunOutcome(None, code, "not-started", "flwr run started no run", "", out,
                              time.monotonic() - start)
        run_id = int(match.group(1))
        server_log = out[match.end() :].partition("\n")[2] if stream else ""
        status, details = self.run_status(run_id)
        finished = status.startswith("finished")
        while code is not None and not finished and time.monotonic() < deadline:
            time.sleep(0.5)
            status, details = self.run_status(run_id)
            finished = status.startswith("finished")
        if code is None or not finished:
            self.flwr("stop", str(run_id), CONNECTION, timeout=30)
            status, details = "timeout", f"not finished after {timeout:g} s (was {status})"
        elif not stream:
            server_log = self.flwr("log", str(run_id), CONNECTION, "--stream", timeout=30)[1]
        server_log = "\n".join(
            line for line in server_log.splitlines() if not any(n in line for n in _CLI_NOISE))
        return RunOutcome(run_id, code, status, details, server_log, out, time.monotonic() - start)

    def _require_running(self) -> None:
        if self._state != "running":
            raise DeploymentError(f"the deployment is {self._state}, not running")

    def _track_descendants(self) -> None:
        """Remember the live descendants of our processes that left our process groups."""
        table = _proc_table()
        ours = {p.popen.pid for p in self._procs.values()}
        frontier = set(ours)
        while frontier:
            frontier = {pid for pid, row in table.items() if row[0] in frontier}
            self._descendants.update((p, table[p][3]) for p in frontier if table[p][1] not in ours)

    def _alive(
        self, groups: Sequence[int], descendants: bool = False, zombies: bool = False
    ) -> list[int]:
        """Live members of ``groups`` and, if asked, our tracked descendants (and zombies)."""
        table = {pid: row for pid, row in _proc_table().items() if zombies or row[2] != "Z"}
        alive = {pid for pid, row in table.items() if row[1] in groups}
        if descendants:
            alive |= {p for p, t in self._descendants.items() if p in table and table[p][3] == t}
        return sorted(alive)

    def _settle(self, groups: Sequence[int], descendants: bool, timeout: float, zombies: bool
                ) -> None:
        """Reap our children and wait (bounded) until the rest is dead (or reaped by init)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self._procs.values():
                proc.popen.poll()
            if not self._alive(groups, descendants, zombies):
                return
            time.sleep(0.05)

    def _retire(self, proc: _Proc) -> None:
        """Forget a reaped process whose group is empty: its pid may be reused from now on."""
        proc.log.close()
        self._done[proc.name] = self._procs.pop(proc.name)

    def _signal_all(self, sig: int) -> None:
        table = _proc_table()
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, sig)
        for pid, started in self._descendants.items():
            row = table.get(pid)
            if row is None or row[3] != started:
                continue  # gone, or the pid is another process's now
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if row[1] == pid:
                    os.killpg(pid, sig)  # a group it leads: the SuperLink's SuperExec, ServerApps
                else:
                    os.kill(pid, sig)

    def _end(self, proc: _Proc) -> None:
        """Stop one CLI process if still running (SIGTERM, then SIGKILL, to its group); reap."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(self.stop_timeout)
        if proc.popen.poll() is not None and not self._alive([proc.popen.pid]):
            self._retire(proc)

    def stop(self) -> None:
        """Stop every process we started and their descendants; see the module docstring."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopping"
        atexit.unregister(self._atexit_stop)
        self._track_descendants()
        groups = [p.popen.pid for p in self._procs.values()]
        for sig, wait in ((signal.SIGTERM, self.stop_timeout), (signal.SIGKILL, 5.0)):
            if not self._alive(groups, descendants=True):
                break
            self._signal_all(sig)
            self._settle(groups, True, wait, zombies=False)
        for proc in list(self._procs.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(1.0)
            proc.log.close()
        unreaped = [p.name for p in self._procs.values() if p.popen.returncode is None]
        survivors = self._alive(groups, descendants=True)
        self._state = "stopped"
        if not self._keep_workdir and hasattr(self, "workdir"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        if unreaped or survivors:
            raise DeploymentError(f"alive after SIGKILL: {unreaped}, pids {survivors}")

    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def __repr__(self) -> str:
        return f"Deployment({self.num_nodes} nodes, {self._state}, {self.address}, tls={self.tls})"
