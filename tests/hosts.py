"""Remote Docker hosts inside this machine, for tests: one network namespace and one TLS dockerd per host.

``namespace_hosts(("a", "b"))`` gives each "host" a network namespace ``dsst-<name>`` joined to this
machine by a veth pair (``dsst-<name>-h`` here, ``dsst-<name>-n`` inside; host a is 10.231.1.1 here and
10.231.1.2 inside, host b 10.231.2.1/10.231.2.2, further hosts the next /30 of those two /24s), and a
``dockerd`` listening only on ``tcp://<inside address>:2376`` with ``--tlsverify`` (a CA, server and
client certificates made by openssl for the session). Such a daemon cannot see anything of the worker
that a real remote host could not: it has its own data and exec roots, no bridge and no route out, so
containers on it run with ``network_mode: none``. Optionally a registry (Debian's ``docker-registry``, TLS
and htpasswd) listens on the first host's outside address (port 18500), trusted by every daemon here
through ``/etc/docker/certs.d``; each namespace has a route to it and to nothing else.

dockerd enters *only* the network namespace (``nsenter --net``): ``ip netns exec`` would remount /sys,
and a ``--bridge=none`` daemon in this machine's own namespace would delete docker0 from the main engine.
Everything started or created here (daemons, registry, namespaces, veths, certs.d entries, temp dirs) is
stopped or removed by pid or by name in the ``finally``, also when a test fails. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import docker

PREFIX = "dsst"
DOCKER_PORT = 2376
REGISTRY_PORT = 18500
CERTS_D = Path("/etc/docker/certs.d")
START_TIMEOUT_S = 60
MIN_API = "1.41"  # Docker 20.10, the oldest engine these hosts run on (no version round trip)


def _run(*command: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class TestCA:
    """A throw-away certificate authority (openssl, EC P-256): server certificates name an IP address."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = f"{PREFIX}-ca") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "ca-key.pem"
        self.cert = directory / "ca.pem"
        _run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", f"/CN={name}",
        )  # fmt: skip

    def issue(self, name: str, *, ip: str | None = None, client: bool = False) -> tuple[Path, Path]:
        """(cert, key) for a server at ``ip`` (its SAN) or for a client."""
        key, csr, cert = (self.directory / f"{name}{suffix}" for suffix in ("-key.pem", ".csr", ".pem"))
        extensions = self.directory / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        extensions.write_text(
            f"extendedKeyUsage={usage}\n" + (f"subjectAltName=IP:{ip}\n" if ip else ""), encoding="utf-8"
        )
        _run(
            "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ip or name}",
        )  # fmt: skip
        _run(
            "openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
        )  # fmt: skip
        return cert, key

    def client_dir(self, directory: Path) -> Path:
        """A DOCKER_CERT_PATH-style directory (ca.pem, cert.pem, key.pem) with a new client certificate."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.issue(f"client-{directory.name}", client=True)
        shutil.copy(self.cert, directory / "ca.pem")
        shutil.copy(cert, directory / "cert.pem")
        shutil.copy(key, directory / "key.pem")
        return directory


@dataclass(frozen=True)
class NamespaceHost:
    """One "remote" Docker host: its namespace, addresses, daemon URL and a client TLS directory."""

    name: str
    namespace: str
    address: str  # inside the namespace (the daemon's)
    outside_address: str  # this machine's end of the veth
    tls_dir: Path
    root: Path

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.address}:{DOCKER_PORT}"

    def command_inside(self, *argv: str) -> list[str]:
        """``argv`` run in this host's network namespace only (e.g. a Celery worker next to its daemon):
        the same file system, this host's network. Never ``ip netns exec`` (it remounts /sys)."""
        return ["nsenter", f"--net=/var/run/netns/{self.namespace}", *argv]

    def client(self, timeout: int = 120) -> docker.APIClient:
        """A plain docker SDK client of this host (tests inspect with it; the code under test has its own)."""
        import docker

        tls = docker.tls.TLSConfig(
            ca_cert=str(self.tls_dir / "ca.pem"),
            client_cert=(str(self.tls_dir / "cert.pem"), str(self.tls_dir / "key.pem")),
            verify=True,
        )
        client = docker.APIClient(base_url=self.docker_host, tls=tls, version=MIN_API, timeout=timeout)
        client.trust_env = False  # $REQUESTS_CA_BUNDLE would replace our CA (psf/requests#3829)
        return client


@dataclass(frozen=True)
class HostRegistry:
    """The registry every host can pull from: ``url`` (host:port), its login, the CA that signed it."""

    url: str
    login: str
    password: str
    ca: Path


@dataclass
class NamespaceHosts:
    hosts: dict[str, NamespaceHost]
    ca: TestCA
    root: Path
    registry: HostRegistry | None = None
    _pids: list[int] = field(default_factory=list)
    _cleanups: list[tuple[str, list[str] | Path | int]] = field(default_factory=list)
    _daemon_argv: dict[str, list[str]] = field(default_factory=dict)
    _daemon_pid: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> NamespaceHost:
        return self.hosts[name]

    def kill_daemon(self, name: str) -> None:
        """SIGKILL a host's dockerd, as a crash would (its containers' shims survive it)."""
        pid = self._daemon_pid.pop(name)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self._cleanups.remove(("daemon", pid))  # never signal that pid again: it may be reused

    def start_daemon(self, name: str) -> None:
        """Start a host's dockerd again, on its data root (stopped at the end like the first one)."""
        host = self.hosts[name]
        # A killed dockerd's containerd died with it and left its pid file, which the next dockerd waits on.
        for stale in ("containerd.pid", "containerd.sock", "containerd.sock.ttrpc", "containerd-debug.sock"):
            (host.root / "exec" / "containerd" / stale).unlink(missing_ok=True)
        self._daemon_pid[name] = _spawn_daemon(self, name, self._daemon_argv[name], self._cleanups)
        _wait_for_daemon(host, self._pids)


def addresses(index: int) -> tuple[str, str]:
    """(outside, inside) of the index-th host: 10.231.1.1/.2, 10.231.2.1/.2, 10.231.1.5/.6, ..."""
    octet, base = 1 + index % 2, 4 * (index // 2)
    if base > 248:
        raise ValueError("at most 124 test hosts")
    return f"10.231.{octet}.{base + 1}", f"10.231.{octet}.{base + 2}"


def require_root() -> str | None:
    """Why these hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces and extra Docker daemons need root"
    missing = [tool for tool in ("ip", "nsenter", "dockerd", "openssl") if shutil.which(tool) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


@contextlib.contextmanager
def namespace_hosts(
    names: Sequence[str] = ("a", "b"), *, registry: bool = True, root: Path | None = None
) -> Iterator[NamespaceHosts]:
    """Start one TLS dockerd per name in its own network namespace (and a registry); remove it all after."""
    base = Path(root or tempfile.mkdtemp(prefix=f"{PREFIX}-hosts-"))  # short: unix socket paths inside
    made = NamespaceHosts(hosts={}, ca=TestCA(base / "ca"), root=base)
    cleanups = made._cleanups
    try:
        for index, name in enumerate(names):
            made.hosts[name] = _start_host(made, index, name, cleanups)
        if registry:
            made.registry = _start_registry(made, cleanups)
        for host in made.hosts.values():
            _wait_for_daemon(host, made._pids)
        yield made
    finally:
        _clean_up(cleanups)
        shutil.rmtree(base, ignore_errors=True)


def _remove_stale(namespace: str, veth: str) -> None:
    """What a crashed earlier session left under our names (processes in our namespace, the netns)."""
    if Path(f"/var/run/netns/{namespace}").exists():
        pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)


def _start_host(
    made: NamespaceHosts, index: int, name: str, cleanups: list[tuple[str, list[str] | Path | int]]
) -> NamespaceHost:
    namespace, outside_if, inside_if = f"{PREFIX}-{name}", f"{PREFIX}-{name}-h", f"{PREFIX}-{name}-n"
    outside, inside = addresses(index)
    _remove_stale(namespace, outside_if)
    _run("ip", "netns", "add", namespace)
    cleanups.append(("command", ["ip", "netns", "del", namespace]))
    _run("ip", "link", "add", outside_if, "type", "veth", "peer", "name", inside_if)
    cleanups.append(("command", ["ip", "link", "del", outside_if]))
    _run("ip", "link", "set", inside_if, "netns", namespace)
    _run("ip", "addr", "add", f"{outside}/30", "dev", outside_if)
    _run("ip", "link", "set", outside_if, "up")
    _run("ip", "-n", namespace, "addr", "add", f"{inside}/30", "dev", inside_if)
    _run("ip", "-n", namespace, "link", "set", inside_if, "up")
    _run("ip", "-n", namespace, "link", "set", "lo", "up")
    root = made.root / name
    (root / "data").mkdir(parents=True)
    (root / "exec").mkdir()
    (root / "daemon.json").write_text("{}", encoding="utf-8")  # not /etc/docker/daemon.json
    cert, key = made.ca.issue(f"server-{name}", ip=inside)
    argv = [
            "nsenter", f"--net=/var/run/netns/{namespace}",  # = NamespaceHost.command_inside
            "dockerd", "--host", f"tcp://{inside}:{DOCKER_PORT}", "--tlsverify",
            "--tlscacert", str(made.ca.cert), "--tlscert", str(cert), "--tlskey", str(key),
            "--config-file", str(root / "daemon.json"),
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "docker.pid"),
            "--iptables=false", "--ip-masq=false", "--bridge=none",
            # Its own containerd (started under exec-root); the namespaces keep apart even a shared one.
            "--containerd-namespace", namespace, "--containerd-plugins-namespace", f"{namespace}-plugins",
            "--cgroup-parent", namespace,
        ]  # fmt: skip
    cleanups.append(("mounts", root))  # undone in reverse: the daemon stops first
    made._daemon_argv[name] = argv
    made._daemon_pid[name] = _spawn_daemon(made, name, argv, cleanups, root=root)
    return NamespaceHost(name, namespace, inside, outside, made.ca.client_dir(root / "client"), root)


def _spawn_daemon(
    made: NamespaceHosts,
    name: str,
    argv: list[str],
    cleanups: list[tuple[str, list[str] | Path | int]],
    *,
    root: Path | None = None,
) -> int:
    log = ((root or made.hosts[name].root) / "dockerd.log").open("ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    made._pids.append(process.pid)
    cleanups.append(("daemon", process.pid))
    return process.pid


def _start_registry(made: NamespaceHosts, cleanups: list[tuple[str, list[str] | Path | int]]) -> HostRegistry:
    import bcrypt

    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (scripts/ensure-test-hosts.sh installs it)")
    address = next(iter(made.hosts.values())).outside_address
    url = f"{address}:{REGISTRY_PORT}"
    root = made.root / "registry"
    root.mkdir()
    password = "test-only-" + os.urandom(6).hex()
    (root / "htpasswd").write_bytes(b"dss:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)))
    cert, key = made.ca.issue("registry", ip=address)
    (root / "config.yml").write_text(
        f"""version: 0.1
storage:
  filesystem: {{rootdirectory: {root / "data"}}}
http:
  addr: {url}
  tls: {{certificate: {cert}, key: {key}}}
auth:
  htpasswd: {{realm: dsst, path: {root / "htpasswd"}}}
""",
        encoding="utf-8",
    )
    trust = CERTS_D / url
    if trust.exists():
        raise RuntimeError(f"{trust} exists already: another test session is using {url}")
    if not CERTS_D.exists():
        CERTS_D.mkdir(parents=True)
        cleanups.append(("command", ["rmdir", "--ignore-fail-on-non-empty", str(CERTS_D)]))
    trust.mkdir()
    cleanups.append(("tree", trust))
    shutil.copy(made.ca.cert, trust / "ca.crt")  # the main daemon (pushes) and ours (pull) read it
    for host in made.hosts.values():  # a route to the registry, and to nothing else
        _run("ip", "-n", host.namespace, "route", "add", f"{address}/32", "via", host.outside_address)
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=log)
    log.close()
    cleanups.append(("daemon", process.pid))
    context = ssl.create_default_context(cafile=str(made.ca.cert))
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"https://{url}/v2/", timeout=1, context=context)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, TLS as configured, asking for the login
                break
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(
                f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}"
            )
        time.sleep(0.2)
    return HostRegistry(url=url, login="dss", password=password, ca=made.ca.cert)


def _wait_for_daemon(host: NamespaceHost, pids: list[int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with host.client(timeout=5) as client:
                client.ping()
                return
        except Exception as exc:  # noqa: BLE001 - starting: retried until the deadline
            last = exc
        if time.monotonic() > deadline:
            tail = (host.root / "dockerd.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dockerd of {host.namespace} did not answer ({last}):\n{tail}")
        time.sleep(0.3)


def _stop(pid: int) -> None:
    """SIGTERM (dockerd then stops its containers and containerd), SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _unmount_below(root: Path) -> None:
    """Mounts a killed dockerd left under its data or exec root (deepest first)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _clean_up(cleanups: list[tuple[str, list[str] | Path | int]]) -> None:
    """Undo in reverse order; every step is attempted even when an earlier one fails. Every daemon is
    asked to stop first, so their shutdowns (several seconds each) overlap."""
    for kind, what in cleanups:
        if kind == "daemon" and isinstance(what, int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(what, signal.SIGTERM)
    for kind, what in reversed(cleanups):
        try:
            if kind == "daemon" and isinstance(what, int):
                _stop(what)
            elif kind == "mounts" and isinstance(what, Path):
                _unmount_below(what)
            elif kind == "tree" and isinstance(what, Path):
                shutil.rmtree(what, ignore_errors=True)
            elif isinstance(what, list):
                subprocess.run(what, capture_output=True, check=False)
        except Exception:  # noqa: BLE001, S112 - best effort: the next step must still run
            continue
