"""`apt-bench serve`: serve a policy over openpi's websocket protocol (wire schema: apt/serving/codec.py).

Any openpi client (`openpi_client.websocket_client_policy.WebsocketClientPolicy`, a robot's client)
can drive an apt-bench policy, and `apt-bench run --policy openpi://HOST:PORT` can evaluate it.

Non-obvious behaviour:
- Binds to 127.0.0.1 unless `--host` says otherwise; there is no authentication, so a wider bind
  prints a warning. `--port 0` takes any free port; the ready line names the one bound.
- `GET /healthz` on the same port answers 200 "OK" (as openpi's server does), for probes.
- Each connection gets its own shallow copy of the policy (the weights are shared), reset when the
  connection opens and on an `{"apt/reset": True}` request. So concurrent clients never share a
  learned policy's sampler state, and a client that resets per episode gets, bit for bit, the chunks
  the in-process policy gives after the same `reset()`. Inference runs one request at a time, in a
  worker thread, so health checks and other connections stay responsive.
- Messages larger than `--max-message-mb` are refused by the websocket layer before they are read:
  the connection is closed with code 1009 ("message too big") and its reason; the server goes on
  serving. Every other malformed request (truncated msgpack, a text frame, a wrong type, a missing or
  unknown key, a wrong shape) gets a text error frame, as openpi's server sends, and the connection
  stays open for the next request.
- Replies carry `"server_timing": {"infer_ms", "queue_ms"}`: time in `policy.act`, and time spent
  waiting for another connection's inference to finish.
"""

from __future__ import annotations

import asyncio
import copy
import http
import logging
import signal
import sys
import time
from typing import Any, Callable

import numpy as np

from apt.registry import build_policy, get_suite
from apt.serving.codec import (BATCH_KEY, PROTOCOL, RESET_KEY, KeyMap, WireError, from_wire, key_map_for,
                               packb, unpackb)
from benchmarks.base import BenchError, IdentifiedPolicy, Observation, Policy, Suite

log = logging.getLogger("apt.serving.server")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class PolicyServer:
    """One policy behind an asyncio websocket server speaking openpi's protocol."""

    def __init__(self, policy: Policy, suite: Suite, *, host: str = "127.0.0.1", port: int = 8000,
                 max_message_bytes: int = 32 << 20, max_batch: int = 64, policy_name: str = ""):
        self.policy = policy
        self.suite = suite
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.keys: KeyMap = key_map_for(suite.name)
        spec = policy.spec
        for cam in spec.observation.cameras:
            self.keys.key_for(cam)  # a camera without an openpi key cannot be served
        known = isinstance(policy, IdentifiedPolicy)
        self.metadata: dict[str, Any] = {
            "protocol": PROTOCOL,
            "policy_id": (policy.policy_id if known else "") or policy_name,
            "checkpoint_sha256": policy.checkpoint_sha256 if known else "",
            "suite": suite.name,
            "action_spec": {k: getattr(spec.action, k) for k in spec.action.__dataclass_fields__},
            "action_dim": spec.action.dim,
            "action_horizon": spec.chunk,
            "replan_steps": spec.replan,  # the policy's own receding horizon (None: the whole chunk)
            "cameras": list(spec.observation.cameras),
            "state_dim": spec.observation.state_dim,
            "image_size": spec.observation.image_size,
            "openpi_keys": self.keys.as_dict(),
            BATCH_KEY: max_batch,
            RESET_KEY: True,
            "max_message_bytes": max_message_bytes,
        }
        self._lock: asyncio.Lock | None = None
        self.bound_port: int | None = None

    # -- serving ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
        """Serve until `stop` is set; `ready(port)` is called once the socket is bound."""
        import websockets.asyncio.server as ws_server

        self._lock = asyncio.Lock()
        try:
            server = await ws_server.serve(self._handler, self.host, self.port, compression=None,
                                           max_size=self.max_message_bytes, process_request=_health)
        except OSError as err:
            raise BenchError(f"cannot listen on {self.host}:{self.port} ({err.strerror or err}); pick "
                             "another --port (0 = any free port)") from None
        async with server:
            self.bound_port = int(next(iter(server.sockets)).getsockname()[1])
            if ready is not None:
                ready(self.bound_port)
            await stop.wait()

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = ws.remote_address
        session = copy.copy(self.policy)  # weights shared; sampler state per connection
        session.reset()
        log.info("connection from %s opened", peer)
        try:
            await ws.send(packb(self.metadata))
            async for message in ws:
                await ws.send(await self.reply(session, message))
        except ConnectionClosed as err:
            log.info("connection from %s closed (%s)", peer, err)
            return
        log.info("connection from %s closed", peer)

    async def reply(self, session: Policy, message: Any) -> bytes | str:
        """One request frame -> the reply frame (bytes), or a text error frame."""
        try:
            msg = unpackb(message)
            if not isinstance(msg, dict):
                raise WireError(f"a request must be a map, got {type(msg).__name__}")
            if RESET_KEY in msg:
                if len(msg) != 1 or msg[RESET_KEY] is not True:
                    raise WireError(f"a reset request is exactly {{{RESET_KEY!r}: True}}")
                session.reset()
                return packb({RESET_KEY: "ok"})
            batched = BATCH_KEY in msg
            observations = self._observations(msg)
        except WireError as err:
            return f"error: {err}"
        assert self._lock is not None, "reply() runs inside run()"
        try:
            t_queue = time.perf_counter()
            async with self._lock:
                t0 = time.perf_counter()
                actions = await asyncio.to_thread(session.act, observations)
                t1 = time.perf_counter()
        except BenchError as err:
            return f"error: the policy refused the observation: {err}"
        except Exception as err:  # a bug in the policy must not take the server down
            log.exception("policy.act failed")
            return f"error: internal error in policy.act ({type(err).__name__}: {err})"
        actions = np.asarray(actions, dtype=np.float32)
        spec = session.spec
        if actions.shape != (len(observations), spec.chunk, spec.action.dim):
            return (f"error: internal error: the policy returned actions of shape {list(actions.shape)}, "
                    f"expected {[len(observations), spec.chunk, spec.action.dim]}")
        return packb({"actions": actions if batched else actions[0],
                      "server_timing": {"infer_ms": (t1 - t0) * 1000.0, "queue_ms": (t0 - t_queue) * 1000.0}})

    def _observations(self, msg: dict[str, Any]) -> list[Observation]:
        spec = self.policy.spec.observation
        if BATCH_KEY not in msg:
            return [from_wire(msg, self.keys, spec.cameras, spec.state_dim)]
        batch = msg[BATCH_KEY]
        if len(msg) != 1:
            raise WireError(f"a batch request holds only {BATCH_KEY!r}, got keys {sorted(map(str, msg))}")
        if not isinstance(batch, list) or not 1 <= len(batch) <= self.max_batch:
            raise WireError(f"{BATCH_KEY!r} must be a list of 1..{self.max_batch} observations, got "
                            + (f"{len(batch)}" if isinstance(batch, list) else type(batch).__name__))
        out = []
        for i, item in enumerate(batch):
            try:
                out.append(from_wire(item, self.keys, spec.cameras, spec.state_dim))
            except WireError as err:
                raise WireError(f"{BATCH_KEY}[{i}]: {err}") from None
        return out


def _health(connection: Any, request: Any) -> Any:
    """`GET /healthz` -> 200 OK (openpi's health check); every other path goes on to the handshake."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


# ---------------------------------------------------------------------------------------------------
# CLI entry point.


def serve(policy: str, suite: str = "tabletop", host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", max_message_mb: int = 32, max_batch: int = 64, seed: int = 0,
          threads: int | None = None) -> int:
    """`apt-bench serve`: build the policy, serve it until SIGINT/SIGTERM, return 0."""
    if threads is not None:  # a server sharing the machine with simulators should not take every core
        import torch

        torch.set_num_threads(threads)

    if policy.startswith("openpi://"):
        raise BenchError("serve a policy name or checkpoint directory, not a remote policy "
                         f"({policy!r} is already served)")
    logging.basicConfig(level=logging.INFO, format="apt-bench serve: %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    suite_obj = get_suite(suite)
    pol = build_policy(policy, suite_obj, seed=seed, device=device)
    server = PolicyServer(pol, suite_obj, host=host, port=port, max_message_bytes=max_message_mb << 20,
                          max_batch=max_batch, policy_name=policy)
    if host not in LOOPBACK:
        print(f"apt-bench serve: warning: listening on {host}, reachable from other machines; the "
              "protocol has no authentication", file=sys.stderr)

    def ready(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"apt-bench serve: serving {policy} ({suite}) on ws://{shown}:{bound} "
              f"(health: http://{shown}:{bound}/healthz)", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.run(stop, ready)

    asyncio.run(main())
    print("apt-bench serve: stopped", file=sys.stderr)
    return 0
