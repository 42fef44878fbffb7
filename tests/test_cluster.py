"""`ops/cluster.conf` as a three-node cluster: two edges and two STT workers on different nodes, streams with three
replicas, and the sessions stream's leader killed in the middle of two sessions.

Each node is a host of its own where the machine allows: a network namespace (made with `unshare -rn`, unprivileged,
and joined to the others by a bridge), reached by the test through a forwarded port. Where user namespaces are
disallowed (some CI runners) the nodes are separate ports on 127.0.0.1 instead.
"""

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from app import runner
from app.bus import Bus
from app.log_reader import read_session
from domain.replay import replay
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL
from tests.realtime_client import JFK, Turns, pcm24k, sdk, silence, stream, word_error_rate, words
from tests.server_process import until_answering

NODES = 3
TEMPLATE = Path(__file__).parents[1] / "ops" / "cluster.conf"
SUBNET = "10.77.0"
ROUNDS = 3  # JFK's sentence and a pause, streamed this many times in each session; the kill comes during the first
PACE = 2.0  # twice real time
COMPLETED = "conversation.item.input_audio_transcription.completed"

# Runs inside a node's namespace with a listening socket of the test's own network: forwards each connection to
# `port` on the node.
FORWARDER = """
import asyncio, socket, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def forward(reader, writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True)

async def main():
    server = await asyncio.start_server(forward, sock=socket.socket(fileno=int(sys.argv[1])))
    await server.serve_forever()

asyncio.run(main())
"""


def _namespaces_work() -> bool:
    try:
        made = subprocess.run(
            ["unshare", "-rn", "ip", "link", "add", "br0", "type", "bridge"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return made.returncode == 0 and bool(subprocess.run(["which", "nsenter"], capture_output=True).stdout)


@dataclass
class Hosts:
    """Where the nodes run: host i has address `address[i]`; `run(i, …)` starts a process there, and
    `reach(i, port)` is how the test itself gets to a port of it."""

    namespaced: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    holders: list[int] = field(default_factory=list)  # pids of the processes that hold each host's namespace

    @property
    def address(self) -> list[str]:
        return [f"{SUBNET}.{i + 1}" if self.namespaced else "127.0.0.1" for i in range(NODES)]

    def run(self, host: int, argv: list[str], env: dict[str, str], **options: Any) -> subprocess.Popen[bytes]:
        if self.namespaced:
            argv = [*self._enter(self.holders[host]), *argv]
        process = subprocess.Popen(argv, env=env, **options)
        self.processes.append(process)
        return process

    def reach(self, host: int, port: int) -> int:
        """A port on 127.0.0.1 of the test's network that leads to `port` on `host`."""
        if not self.namespaced:
            return port
        listener = socket.create_server(("127.0.0.1", 0))
        with listener:
            self.run(
                host,
                [sys.executable, "-c", FORWARDER, str(listener.fileno()), str(port)],
                os.environ.copy(),
                pass_fds=[listener.fileno()],
            )
            return int(listener.getsockname()[1])

    @staticmethod
    def _enter(holder: int) -> list[str]:
        return ["nsenter", "-t", str(holder), "--user", "--net", "--preserve-credentials"]

    def _hold(self, argv: list[str]) -> int:
        """Start a process that makes a namespace and sleeps in it; its pid, once the namespace exists."""
        process = subprocess.Popen([*argv, "sh", "-c", "echo; exec sleep infinity"], stdout=subprocess.PIPE)
        self.processes.append(process)
        assert process.stdout is not None and process.stdout.readline() == b"\n", "the namespace was not made"
        return process.pid

    def _ip(self, holder: int, *args: str) -> None:
        subprocess.run([*self._enter(holder), "ip", *args], check=True, capture_output=True)

    def connect(self) -> None:
        """Make a network with a bridge (the switch) and a namespace per host, each with a cable to it."""
        switch = self._hold(["unshare", "-rn"])
        self._ip(switch, "link", "add", "switch", "type", "bridge")
        self._ip(switch, "link", "set", "switch", "up")
        for i in range(NODES):
            host = self._hold([*self._enter(switch), "unshare", "-n"])
            self.holders.append(host)
            self._ip(switch, "link", "add", f"port{i}", "type", "veth", "peer", "name", "eth0", "netns", str(host))
            self._ip(switch, "link", "set", f"port{i}", "master", "switch", "up")
            self._ip(host, "addr", "add", f"{self.address[i]}/24", "dev", "eth0")
            self._ip(host, "link", "set", "eth0", "up")
            self._ip(host, "link", "set", "lo", "up")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Node:
    name: str
    client_port: int  # on its host
    route_port: int
    process: subprocess.Popen[bytes] | None = None


def node_config(template: str, node: int, nodes: list[Node], hosts: Hosts, store_dir: Path) -> str:
    """`ops/cluster.conf` (nats-1's file) made into node `node`'s: its name, ports, store, and every node's route."""
    me = nodes[node]
    listen = "0.0.0.0" if hosts.namespaced else "127.0.0.1"  # a host's every address; else never the machine's
    routes = "\n".join(f"        nats-route://{hosts.address[i]}:{n.route_port}" for i, n in enumerate(nodes))
    edits = {
        "server_name: nats-1": f"server_name: {me.name}",
        "listen: 0.0.0.0:4222": f"listen: {listen}:{me.client_port}",
        "listen: 0.0.0.0:6222": f"listen: {listen}:{me.route_port}",
        "store_dir: /var/lib/nats": f'store_dir: "{store_dir}"',
        "max_file_store: 200GB": "max_file_store: 1GB",
    }
    config = template
    for old, new in edits.items():
        assert config.count(old) == 1, f"ops/cluster.conf has changed: no single {old!r}"
        config = config.replace(old, new)
    config, found = re.subn(r"(\s*nats-route://nats-\d:6222\n)+", "\n" + routes + "\n", config)
    assert found == 1, "ops/cluster.conf has changed: no route list"
    return config


@contextlib.asynccontextmanager
async def observer(url: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(url, "vocalis", "test-observer")
    try:
        yield bus
    finally:
        await bus.close()


@dataclass
class Session:
    """One client's session: every event with the time it came, and its turns."""

    edge: int
    events: list[tuple[float, Any]] = field(default_factory=list)
    turns: Turns = field(default_factory=Turns)

    @property
    def session_id(self) -> str:
        return str(self.events[0][1].session.id)

    def transcripts(self) -> list[str]:
        return [e.transcript for _, e in self.events if e.type == COMPLETED]

    def committed_after(self, moment: float) -> set[str]:
        return {e.item_id for t, e in self.events if e.type == "input_audio_buffer.committed" and t > moment}

    def went_on_after(self, moment: float) -> float:
        """Seconds from `moment` to the first transcript of a turn committed after it."""
        later = self.committed_after(moment)
        return min(t - moment for t, e in self.events if e.type == COMPLETED and e.item_id in later)


async def converse(url: str, session: Session, first_turn: asyncio.Event) -> None:
    """Stream JFK's sentence ROUNDS times with pauses (server VAD commits the turns), until each is transcribed.

    The stream ends with a clear of the buffer (its trailing silence) as a mark: the session reduces its records in
    order, so once it answers `cleared` every turn of the audio is committed. (Without it, a last transcript that came
    before the last chunk was sent left the client waiting for an event that never came.)"""
    speech = (pcm24k("jfk.wav") + silence(1500)) * ROUNDS
    async with sdk(url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session.events.append((time.monotonic(), await conn.recv()))

        async def receive() -> None:
            heard_all = False
            async for event in conn:
                session.events.append((time.monotonic(), event))
                session.turns.see(event)
                if session.turns.completed:
                    first_turn.set()
                heard_all = heard_all or event.type == "input_audio_buffer.cleared"
                if heard_all and session.turns.all_transcribed:
                    return

        receiving = asyncio.create_task(receive())
        await stream(conn, speech, pace=PACE)
        await conn.input_audio_buffer.clear()
        await asyncio.wait_for(receiving, 60)


def _log_unavailable(event: Any) -> bool:
    return bool(event.type == "error" and event.error.code == "log_unavailable")


def _vocalis(hosts: Hosts, host: int, log_dir: Path, url: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environment = os.environ | {
        "VOCALIS_NATS_URL": url,
        "VOCALIS_STREAM_REPLICAS": str(NODES),
        "VOCALIS_MODEL_DIR": str(MODEL_CACHE),
        "VOCALIS_STT_MODEL": TEST_STT_MODEL,
        "VOCALIS_STT_CPU_THREADS": "1",
        "VOCALIS_LOG_FORMAT": "json",
        **env,
    }
    with (log_dir / f"{args[0]}-{host + 1}.log").open("wb") as log:  # for a failure's diagnosis
        return hosts.run(host, [sys.executable, "-m", "app", *args], environment, stderr=log)


async def _until(what: str, seconds: float, check: Any) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.Error, OSError):
            if await check():
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {seconds} s")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    hosts = Hosts(namespaced=_namespaces_work())
    try:
        if hosts.namespaced:
            hosts.connect()
        yield hosts
    finally:
        hosts.stop()


@pytest.mark.slow
async def test_a_three_node_cluster_loses_its_stream_leader_mid_session(hosts: Hosts, tmp_path: Path):
    started = time.monotonic()
    password = secrets.token_urlsafe(16)
    if hosts.namespaced:  # every host has the ports of the template
        nodes = [Node(f"nats-{i + 1}", 4222, 6222) for i in range(NODES)]
        edge_ports = [8000, 8000]
    else:
        nodes = [Node(f"nats-{i + 1}", runner.free_port(), runner.free_port()) for i in range(NODES)]
        edge_ports = [runner.free_port(), runner.free_port()]
    template = TEMPLATE.read_text()
    for i, node in enumerate(nodes):
        config = tmp_path / f"{node.name}.conf"
        config.write_text(node_config(template, i, nodes, hosts, tmp_path / node.name))
        env = os.environ | {"VOCALIS_NATS_PASSWORD": password}
        with (tmp_path / f"{node.name}.log").open("wb") as log:  # for a failure's diagnosis
            node.process = hosts.run(i, [runner.nats_server_binary(), "-c", str(config)], env, stderr=log)

    def url(first: int, address: list[str], ports: list[int]) -> str:
        """Every node, `first` first (comma-separated, as ops/cluster.conf says)."""
        order = [first, *(i for i in range(NODES) if i != first)]
        return ",".join(f"nats://vocalis:{password}@{address[i]}:{ports[i]}" for i in order)

    def inside(first: int) -> str:
        return url(first, hosts.address, [n.client_port for n in nodes])

    # The test's own way in: the nodes through forwarded ports where they have hosts of their own.
    reach = [hosts.reach(i, n.client_port) for i, n in enumerate(nodes)]

    def outside(first: int) -> str:
        return url(first, ["127.0.0.1"] * NODES, reach)

    async with observer(outside(0)) as bus:
        await _until("a JetStream meta leader", 30, bus.js.account_info)

    # Edges on hosts 1 and 2, STT workers on hosts 2 and 3: each process talks to its own host's node first.
    edges = [
        _vocalis(hosts, i, tmp_path, inside(i), "edge", "--port", str(edge_ports[i]), VOCALIS_DATA_DIR=str(tmp_path))
        for i in (0, 1)
    ]
    for i in (1, 2):
        _vocalis(hosts, i, tmp_path, inside(i), "worker", "stt", VOCALIS_WORKER_NAME=f"stt-{i + 1}")
    edge_reach = [hosts.reach(i, edge_ports[i]) for i in (0, 1)]
    edge_urls = [f"ws://127.0.0.1:{port}/v1" for port in edge_reach]
    for port, edge in zip(edge_reach, edges, strict=True):  # a session must not dial an edge still starting
        await until_answering(port, edge)

    async with observer(outside(0)) as bus:

        async def workers_waiting() -> bool:
            assert all(edge.poll() is None for edge in edges), "an edge exited"
            return bool((await bus.js.consumer_info(bus.subjects.jobs_stream, "stt")).num_waiting >= 2)

        await _until("two STT workers waiting for jobs", 60, workers_waiting)
        info = await bus.js.stream_info(bus.subjects.sessions_stream)
        assert info.config.num_replicas == NODES and info.cluster is not None
        assert len(info.cluster.replicas or []) == NODES - 1
        leader = next(i for i, n in enumerate(nodes) if n.name == info.cluster.leader)
    ready = time.monotonic()

    sessions = [Session(edge=i) for i in (0, 1)]
    first_turns = [asyncio.Event(), asyncio.Event()]
    talking = [asyncio.create_task(converse(edge_urls[s.edge], s, first_turns[s.edge])) for s in sessions]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_turns)), 30)
    victim = nodes[leader].process
    assert victim is not None
    victim.send_signal(signal.SIGKILL)  # the whole node, as a crash: no goodbye to the cluster
    killed = time.monotonic()
    await asyncio.gather(*talking)
    talked = time.monotonic()

    survivor = (leader + 1) % NODES
    async with observer(outside(survivor)) as bus:
        info = await bus.js.stream_info(bus.subjects.sessions_stream)
        assert info.cluster is not None and info.cluster.leader not in (None, nodes[leader].name)
        for session in sessions:
            turns = session.turns
            assert len(turns.completed) == len(set(turns.completed)), "each turn transcribed once"
            assert set(turns.completed) == turns.committed, "every committed turn transcribed"
            assert session.committed_after(killed), "the session went on after the kill"
            # Speech, not garbage: whisper-tiny on JFK's short turns ("ask not" alone) misses words now and then.
            assert word_error_rate(" ".join([JFK] * ROUNDS), " ".join(session.transcripts())) < 0.45, [
                words(t) for t in session.transcripts()
            ]
            # The log, as the new leader has it, reproduces every event the client saw: no record the edge had
            # stored (and reduced) is missing or out of place. (Not the edge's own word that the log was out of
            # reach, which it sends without the log: the edge on the lost node says so while it reconnects.)
            received = [e.event_id for _, e in session.events if not _log_unavailable(e)]
            replayed = [e.event_id for e in replay((await read_session(bus, session.session_id)).inputs)]
            assert replayed[: len(received)] == received

    went_on = [round(s.went_on_after(killed), 1) for s in sessions]
    print(
        f"\nnamespaced={hosts.namespaced} killed {nodes[leader].name}; sessions went on after {went_on} s; "
        f"startup {ready - started:.1f} s, sessions {talked - ready:.1f} s, total {time.monotonic() - started:.1f} s"
    )
