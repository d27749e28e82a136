"""The openpi client policy: `--policy openpi://HOST:PORT` evaluates a policy served over openpi's
websocket protocol (by `apt-bench serve` or openpi's own `scripts/serve_policy.py`).

The wire schema (codec, observation keys per suite, protocol extensions) is apt/serving/codec.py,
shared with the server; this module holds the connection, the spec taken from the server's
metadata, and the per-request timings kept for the episode record.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from apt.serving.codec import BATCH_KEY, RESET_KEY, WireError, describe, key_map_for, packb, to_wire, unpackb
from benchmarks.base import ActionSpec, BenchError, Observation, ObservationSpec, PolicySpec, Suite

SCHEME = "openpi://"
DEFAULT_PORT = 8000  # openpi's serve_policy.py default


class RemotePolicyError(BenchError):
    """The remote server refused a request, answered nonsense, or went away."""


@dataclass(frozen=True)
class InferenceTiming:
    """One request: how many observations, the server's own inference time, and the round trip."""

    batch: int
    round_trip_ms: float
    server_infer_ms: float | None  # None when the server does not report `server_timing`

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize_timings(timings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Requests, observations, and mean / p95 of server inference and round-trip ms (None if unknown).

    round trip - server infer = transport + (de)serialisation + queueing behind other clients.
    """
    rtt = np.array([t["round_trip_ms"] for t in timings], np.float64)
    srv = np.array([t["server_infer_ms"] for t in timings if t["server_infer_ms"] is not None], np.float64)

    def stat(x: np.ndarray, fn: Any) -> float | None:
        return round(float(fn(x)), 3) if len(x) else None

    def p95(x: np.ndarray) -> float:
        return float(np.percentile(x, 95))

    return {"requests": len(timings), "observations": int(sum(t["batch"] for t in timings)),
            "server_infer_ms_mean": stat(srv, np.mean), "server_infer_ms_p95": stat(srv, p95),
            "round_trip_ms_mean": stat(rtt, np.mean), "round_trip_ms_p95": stat(rtt, p95)}


def parse_url(url: str) -> tuple[str, int]:
    """'openpi://HOST:PORT' -> (host, port); the port defaults to openpi's 8000."""
    if not url.startswith(SCHEME):
        raise BenchError(f"remote policy {url!r} must look like {SCHEME}HOST:PORT")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise BenchError(f"remote policy {url!r}: {err}; expected {SCHEME}HOST:PORT") from None
    if not host or parts.path not in ("", "/") or parts.query:
        raise BenchError(f"remote policy {url!r}: expected {SCHEME}HOST:PORT (no path or query)")
    return host, port if port is not None else DEFAULT_PORT


class RemotePolicy:
    """Policy protocol over an openpi websocket policy server (ours or openpi's own).

    The spec comes from the server's metadata where it says (apt-bench servers say everything), else
    from the suite: its action spec and state size, every mapped camera, and the chunk length the
    first reply shows. `reset()` clears the timings and, where the server offers it, resets the served
    policy. Each request's timing is kept (`last_timing`, `timings()`) for the episode record.
    The connection is opened at construction (so a wrong address fails before any episode) and
    re-opened after a pickle round trip (Ray) or a closed connection.
    """

    def __init__(self, host: str, port: int, suite: Suite, *, timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, max_message_bytes: int = 256 << 20):
        self.host, self.port = host, int(port)
        self.url = f"{SCHEME}{host}:{port}"
        self.keys = key_map_for(suite.name)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self._ws: Any = None
        self.metadata: dict[str, Any] = {}
        self._connect()
        self.spec = self._spec_from(self.metadata, suite)
        self._chunk_known = "action_horizon" in self.metadata
        served = self.metadata.get("policy_id")
        # Identity in the results store: the served policy where the server names it, else the address.
        self.policy_id = f"openpi:{served}" if isinstance(served, str) and served else self.url
        self.checkpoint_sha256 = str(self.metadata.get("checkpoint_sha256", ""))
        self.max_batch = int(self.metadata.get(BATCH_KEY) or 0)  # 0: one request per observation
        self.can_reset = bool(self.metadata.get(RESET_KEY))
        self._timings: list[InferenceTiming] = []
        self.last_timing: InferenceTiming | None = None

    @classmethod
    def from_url(cls, url: str, suite: Suite, **kwargs: Any) -> "RemotePolicy":
        host, port = parse_url(url)
        return cls(host, port, suite, **kwargs)

    # -- connection ---------------------------------------------------------------------------------

    def _connect(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        uri = f"ws://[{self.host}]:{self.port}" if ":" in self.host else f"ws://{self.host}:{self.port}"
        # websockets >= 17 deprecates a bare connect() unless `legacy=True` asks for a plain connection.
        legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
        try:
            ws = connect(uri, compression=None, max_size=self.max_message_bytes, proxy=None,
                         open_timeout=self.connect_timeout_s, close_timeout=2, **legacy)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            raise BenchError(f"cannot reach the policy server at {self.host}:{self.port} ({err}); start one "
                             f"with `apt-bench serve --policy P --port {self.port}` or openpi's "
                             f"scripts/serve_policy.py, or fix --policy {self.url}") from None
        try:
            meta = unpackb(ws.recv(timeout=self.connect_timeout_s))
        except (TimeoutError, WireError, OSError) as err:
            ws.close()
            raise BenchError(f"the server at {self.host}:{self.port} sent no openpi metadata ({err}); "
                             "is it an openpi websocket policy server?") from None
        except ConnectionClosed as err:
            raise BenchError(f"the server at {self.host}:{self.port} closed the connection before its "
                             f"metadata ({err})") from None
        if not isinstance(meta, dict):
            ws.close()
            raise BenchError(f"the server at {self.host}:{self.port} sent metadata of type "
                             f"{type(meta).__name__}, expected a map")
        self._ws, self.metadata = ws, meta

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ws"] = None  # sockets do not travel; the copy reconnects on first use
        return state

    def _request(self, payload: dict[str, Any]) -> tuple[Any, float]:
        """Send one frame, wait for its reply; (decoded reply, round trip in ms)."""
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            self._connect()
        t0 = time.perf_counter()
        try:
            self._ws.send(packb(payload))
            raw = self._ws.recv(timeout=self.timeout_s)
        except ConnectionClosed as err:
            self._ws = None  # the next request reconnects
            raise RemotePolicyError(f"policy server {self.host}:{self.port} closed the connection "
                                    f"({err})") from None
        except TimeoutError:
            self.close()
            raise RemotePolicyError(f"policy server {self.host}:{self.port} sent no reply within "
                                    f"{self.timeout_s:.0f} s") from None
        rtt = (time.perf_counter() - t0) * 1000.0
        if isinstance(raw, str):
            raise RemotePolicyError(f"policy server {self.host}:{self.port} answered with an error: "
                                    f"{raw.strip()[-2000:]}")
        reply = unpackb(raw)
        if not isinstance(reply, dict):
            raise RemotePolicyError(f"policy server {self.host}:{self.port} replied with a "
                                    f"{type(reply).__name__}, expected a map")
        return reply, rtt

    # -- Policy protocol ----------------------------------------------------------------------------

    def reset(self) -> None:
        self._timings = []
        self.last_timing = None
        if self.can_reset:
            reply, _ = self._request({RESET_KEY: True})
            if reply.get(RESET_KEY) != "ok":
                raise RemotePolicyError(f"policy server {self.host}:{self.port} did not acknowledge reset")

    def act(self, observations: list[Observation]) -> np.ndarray:
        cams = self.spec.observation.cameras
        if not observations:
            return np.zeros((0, self.spec.chunk, self.spec.action.dim), np.float32)
        msgs = [to_wire(o, self.keys, cams) for o in observations]
        if self.max_batch > 0:
            groups = [msgs[i:i + self.max_batch] for i in range(0, len(msgs), self.max_batch)]
            chunks = [self._infer({BATCH_KEY: g}, len(g)) for g in groups]
        else:
            chunks = [self._infer(m, None)[None] for m in msgs]
        return np.concatenate(chunks, axis=0)

    def _infer(self, payload: dict[str, Any], batch: int | None) -> np.ndarray:
        reply, rtt = self._request(payload)
        timing = reply.get("server_timing")
        infer_ms = timing.get("infer_ms") if isinstance(timing, dict) else None
        self.last_timing = InferenceTiming(batch=batch or 1, round_trip_ms=rtt,
                                           server_infer_ms=float(infer_ms) if infer_ms is not None else None)
        self._timings.append(self.last_timing)
        actions = reply.get("actions")
        want = "[B, H, A]" if batch else "[H, A]"
        if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "iuf" \
                or actions.ndim != (3 if batch else 2) or (batch and actions.shape[0] != batch):
            raise RemotePolicyError(f"policy server {self.host}:{self.port}: reply 'actions' must be "
                                    f"a numeric {want} array, got {describe(actions)}")
        if actions.shape[-1] != self.spec.action.dim:
            raise RemotePolicyError(f"policy server {self.host}:{self.port} returned "
                                    f"{actions.shape[-1]}-D actions; the spec says {self.spec.action.dim}")
        if not np.isfinite(actions).all():
            raise RemotePolicyError(f"policy server {self.host}:{self.port} returned non-finite actions")
        if not self._chunk_known:  # openpi servers do not announce H: learn it from the first reply
            self.spec = dataclasses.replace(self.spec, chunk=int(actions.shape[-2]))
            self._chunk_known = True
        return actions.astype(np.float32)

    def timings(self) -> list[dict[str, Any]]:
        """Every request since the last `reset()`: batch, round_trip_ms, server_infer_ms."""
        return [t.as_dict() for t in self._timings]

    def timing_summary(self) -> dict[str, Any]:
        """`summarize_timings(self.timings())`: one small dict for an episode record."""
        return summarize_timings(self.timings())

    # -- spec ---------------------------------------------------------------------------------------

    def _spec_from(self, meta: dict[str, Any], suite: Suite) -> PolicySpec:
        where = f"metadata of {self.host}:{self.port}"
        try:
            if isinstance(meta.get("action_spec"), dict):
                fields = {f.name for f in dataclasses.fields(ActionSpec)}
                action = ActionSpec(**{k: v for k, v in meta["action_spec"].items() if k in fields})
            else:
                action = suite.action_spec
                if "action_dim" in meta:
                    action = dataclasses.replace(action, dim=int(meta["action_dim"]))
            cameras = tuple(str(c) for c in meta.get("cameras", self.keys.cameras))
            for c in cameras:
                self.keys.key_for(c)
            obs = ObservationSpec(cameras=cameras,
                                  state_dim=int(meta.get("state_dim", suite.observation_spec.state_dim)),
                                  image_size=int(meta.get("image_size", suite.observation_spec.image_size)))
            replan = meta.get("replan_steps")  # openpi servers do not send it: execute whole chunks
            return PolicySpec(action=action, observation=obs, chunk=int(meta.get("action_horizon", 1)),
                              replan=int(replan) if replan else None)
        except BenchError as err:
            raise BenchError(f"{where}: {err}") from None
        except (TypeError, ValueError) as err:
            raise BenchError(f"{where} does not parse ({err})") from None


def connect(url: str, suite: Suite) -> RemotePolicy:
    """`openpi://HOST:PORT` -> a connected RemotePolicy (the registry's hook for the scheme)."""
    return RemotePolicy.from_url(url, suite)
