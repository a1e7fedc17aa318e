"""Run a real Apache Kafka broker (KRaft) and a real Redis server as plain processes.

Used by the test fixtures (free ports, temporary data, killed with the test run)
and by ``make stack-up`` / ``make stack-down`` (fixed ports 9092 / 6379, pid
files under ``.stack/``). No Docker: the broker runs from the release jars that
Maven resolves into ``.cache/kafka/<version>/lib``; Redis is Debian's server.

    python tools/localstack.py fetch        # Kafka jars into the cache (no-op when cached)
    python tools/localstack.py up|down|status
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "4.1.1"
KAFKA_POM = ROOT / "tools" / "kafka" / "pom.xml"
KAFKA_LOG4J = ROOT / "tools" / "kafka" / "log4j2.properties"
KAFKA_LIB = ROOT / ".cache" / "kafka" / KAFKA_VERSION / "lib"
STACK_DIR = ROOT / ".stack"
HOST = "127.0.0.1"


class StackError(RuntimeError):
    """A server of the local stack could not be fetched, started or stopped."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are free now, below the kernel's ephemeral
    range: an outgoing connection's own port, which ``free_port`` ports share a range with, can
    never take ``p + 1`` before it is listened on."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(10_000, low - 1)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind((HOST, port))
                b.bind((HOST, port + 1))
            except OSError:
                continue
        return port
    raise StackError("no two free ports in a row below the ephemeral range")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def die_with_parent() -> None:
    """Child-side: get SIGKILL when the test process dies, so no server outlives it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_until(what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise StackError(f"{what} exited during start-up")
        if check():
            return
        time.sleep(0.1)
    raise StackError(f"{what} not ready after {timeout:.0f} s")


def fetch_kafka(quiet: bool = True) -> Path:
    """Resolve the broker jars with Maven once; later calls touch no network."""
    stamp = KAFKA_LIB / ".complete"
    if stamp.exists():
        return KAFKA_LIB
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is not installed: it is needed once to fetch Kafka's jars")
    if KAFKA_LIB.exists():
        shutil.rmtree(KAFKA_LIB)
    cmd = [
        "mvn", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={KAFKA_LIB}", "-DincludeScope=runtime",
        f"-Dkafka.version={KAFKA_VERSION}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"Maven could not resolve Kafka {KAFKA_VERSION}:\n{result.stdout[-3000:]}")
    stamp.write_text(KAFKA_VERSION)
    return KAFKA_LIB


def ensure_redis() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError("redis-server is not installed (make test installs Debian's redis-server)")
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class KafkaBroker:
    """One combined broker+controller node on loopback, storing its data in ``data_dir``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "768m"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp", f"{fetch_kafka()}/*", main, *args,
        ]

    def _write_properties(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # The chaos tests' learners use short sessions, so that a restart after a SIGKILL
            # gets its partitions in seconds.
            "group.min.session.timeout.ms": "2000",
            # Room for the dead-letter copy of an oversized event (the service's own limit is lower).
            "message.max.bytes": str(8 * 1024 * 1024),
        }
        self.properties_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def format(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        cluster_id = uuid.uuid4().hex[:22]
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(self.properties_path)),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StackError(f"Kafka storage format failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0, detach: bool = False, pidfile: Path | None = None) -> None:
        """Start the JVM (formatting storage on first use) and wait for a metadata answer;
        ``pidfile`` is written as soon as the process exists."""
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self.format()
        else:
            self._write_properties()  # this start's ports: a data directory is kept across ports
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties_path)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=detach,
                preexec_fn=None if detach else die_with_parent,
            )
        if pidfile is not None:
            pidfile.write_text(str(self.proc.pid))
        try:
            _wait_until("Kafka broker", self.answers_metadata, timeout, self.alive)
        except StackError as exc:
            self.kill()
            raise StackError(
                f"{exc} (port {self.port}); broker log tail ({self.log_path}):\n{_tail(self.log_path)}"
            ) from None
        except BaseException:  # interrupted: leave nothing running
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers_metadata(self) -> bool:
        if not port_open(self.port):
            return False
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        except Exception:
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except Exception:
            return False
        finally:
            admin.close()

    def kill(self) -> None:
        """SIGKILL: the crash the fault tests need."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class RedisServer:
    """Debian's redis-server on loopback; ``fsync_always`` makes an acknowledged write durable."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    fsync_always: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 20.0, detach: bool = False, pidfile: Path | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            ensure_redis(), "--port", str(self.port), "--bind", HOST, "--dir", str(self.data_dir),
            "--save", "", "--logfile", str(self.log_path), "--daemonize", "no",
            "--protected-mode", "yes",
        ]
        if self.fsync_always:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=detach, preexec_fn=None if detach else die_with_parent,
        )
        if pidfile is not None:
            pidfile.write_text(str(self.proc.pid))
        try:
            _wait_until("Redis", self.answers_ping, timeout, self.alive)
        except StackError as exc:
            self.kill()
            raise StackError(f"{exc} (port {self.port}); log tail:\n{_tail(self.log_path)}") from None
        except BaseException:  # interrupted: leave nothing running
            self.kill()
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers_ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def create_topics(bootstrap: str, names: list[str], partitions: int = 1, timeout: float = 30.0,
                  configs: dict[str, str] | None = None) -> None:
    """Create topics (with topic ``configs``) and wait until the broker reports all their
    partitions."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {}) for name in names])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = admin.describe_topics(names)
            if len(described) == len(names) and all(
                    len(d.get("partitions", [])) == partitions for d in described):
                return
            time.sleep(0.05)
        raise StackError(f"topics {names} have not {partitions} partitions after {timeout} s")
    finally:
        admin.close()


# --- the dev stack: `make stack-up` / `make stack-down` -------------------------------------

DEV_KAFKA_PORT, DEV_CONTROLLER_PORT, DEV_REDIS_PORT = 9092, 9093, 6379


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (dead, not yet reaped by its parent) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _reap(pid: int) -> None:
    """Reap ``pid`` if it is a child of ours (the demo starts the stack as its children)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class DevStack:
    """Kafka and Redis for trying the service by hand, on fixed ports, their data and pid files
    under ``directory``. A server is found by its pid file, or, if a start was interrupted
    before the file was written, by its command line (which names its data directory)."""

    directory: Path = STACK_DIR
    kafka_port: int = DEV_KAFKA_PORT
    controller_port: int = DEV_CONTROLLER_PORT
    redis_port: int = DEV_REDIS_PORT

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.directory / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and pid_alive(pid):
            return pid
        return self._by_command_line(name)

    def _by_command_line(self, name: str) -> int | None:
        """A java whose arguments name this stack's Kafka directory, or a redis-server on this
        stack's port (Redis rewrites its command line to ``redis-server host:port``)."""
        kafka_dir = str(self.directory / "kafka").encode()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if name == "kafka":
                found = argv[0].endswith(b"java") and any(kafka_dir in arg for arg in argv)
            else:
                found = b"redis-server" in argv[0] and f":{self.redis_port}".encode() in b" ".join(argv)
            if found and pid_alive(int(proc.name)):
                return int(proc.name)
        return None

    def up(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.pid("kafka") is None:
            for port in (self.kafka_port, self.controller_port):
                if port_open(port):
                    raise StackError(f"port {port} is taken by another process: cannot start Kafka there")
            broker = KafkaBroker(self.directory / "kafka", self.kafka_port, self.controller_port)
            broker.start(detach=True, pidfile=self.directory / "kafka.pid")
            print(f"Kafka {KAFKA_VERSION} up on {broker.bootstrap} (log: {broker.log_path})")
        else:
            print(f"Kafka already running on {HOST}:{self.kafka_port}")
        if self.pid("redis") is None:
            if port_open(self.redis_port):
                raise StackError(f"port {self.redis_port} is taken by another process: cannot start Redis")
            redis = RedisServer(self.directory / "redis", self.redis_port)
            redis.start(detach=True, pidfile=self.directory / "redis.pid")
            print(f"Redis up on {redis.url}")
        else:
            print(f"Redis already running on {HOST}:{self.redis_port}")

    def down(self) -> None:
        for name in ("kafka", "redis"):
            pid = self.pid(name)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while pid_alive(pid) and time.monotonic() < deadline:
                    _reap(pid)
                    time.sleep(0.1)
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
                print(f"{name} stopped")
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{name}.pid").unlink()

    def status(self) -> int:
        up = 0
        for name, port in (("kafka", self.kafka_port), ("redis", self.redis_port)):
            pid = self.pid(name)
            print(f"{name}: " + (f"running (pid {pid}, {HOST}:{port})" if pid else "stopped"))
            up += pid is not None
        return 0 if up == 2 else 1


def _topic(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Create a topic on the stack's broker (it creates a topic written before that with one
    partition)."""
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if not args.topic or args.partitions < 1:
        parser.error("topic: give a NAME and --partitions N (1 or more)")
    if not port_open(args.kafka_port):
        raise StackError(f"topic {args.topic}: no broker on {HOST}:{args.kafka_port}: make stack-up first")
    try:
        create_topics(f"{HOST}:{args.kafka_port}", [args.topic], args.partitions)
    except TopicAlreadyExistsError:
        raise StackError(f"topic {args.topic}: it exists already") from None
    except KafkaError as exc:
        raise StackError(f"topic {args.topic}: {type(exc).__name__}: {exc}") from None
    print(f"topic {args.topic}: {args.partitions} partitions on {HOST}:{args.kafka_port}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localstack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch", "up", "down", "status", "topic"])
    parser.add_argument("topic", nargs="?", help="topic: the topic to create")
    parser.add_argument("--partitions", type=int, default=1, help="topic: its partitions")
    parser.add_argument("--dir", type=Path, default=STACK_DIR, help="data and pid files")
    parser.add_argument("--kafka-port", type=int, default=DEV_KAFKA_PORT)
    parser.add_argument("--controller-port", type=int, default=DEV_CONTROLLER_PORT)
    parser.add_argument("--redis-port", type=int, default=DEV_REDIS_PORT)
    args = parser.parse_args(argv)
    if args.topic and args.command != "topic":
        parser.error(f"{args.command}: takes no topic name ({args.topic!r})")
    stack = DevStack(args.dir.resolve(), args.kafka_port, args.controller_port, args.redis_port)
    try:
        if args.command == "fetch":
            print(f"Kafka {KAFKA_VERSION} jars in {fetch_kafka()}")
        elif args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "topic":
            return _topic(args, parser)
        else:
            return stack.status()
    except StackError as exc:
        print(f"localstack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # what it started is found by its command line and stopped
        print("localstack: interrupted", file=sys.stderr)
        if args.command == "up":
            stack.down()
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
