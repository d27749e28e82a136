"""Remote policies over openpi's websocket protocol: `--policy openpi://HOST:PORT`.

One module holds both sides' wire schema (the codec, the per-suite observation keys, the request
checks), so `apt-bench serve` (apt/serving/server.py) and this client cannot drift apart.

Protocol (openpi's `WebsocketPolicyServer` / `openpi_client.websocket_client_policy`):
- Frames are binary msgpack; numpy arrays travel as `{b"__ndarray__": True, b"data", b"dtype",
  b"shape"}` maps, exactly as `openpi_client.msgpack_numpy` packs them (object, void and complex
  arrays are refused on both sides, so nothing is ever unpickled).
- On connect the server sends one metadata map. openpi's own servers send their config's
  `policy_metadata` (often empty); `apt-bench serve` sends `METADATA_KEYS` below.
- Each request is one observation map in openpi's keys (`KEY_MAPS`); the reply is a map with
  `"actions"`: [H, A] and `"server_timing": {"infer_ms": ...}`. A server error is a text frame
  (openpi's client raises RuntimeError on it).
- `apt-bench serve` extensions, advertised in its metadata and used only when advertised:
  `{"apt/batch": [obs, ...]}` -> `"actions"`: [B, H, A] (one forward pass for B observations), and
  `{"apt/reset": True}` -> `{"apt/reset": "ok"}` (calls the served policy's `reset()`, e.g. re-seeds a
  learned policy's sampler, so an episode over the wire samples what it samples in-process).

Observation keys per suite (`KEY_MAPS`; openpi's LIBERO example client uses the same four keys):

| openpi key               | tabletop           | libero_*               |
|--------------------------|--------------------|------------------------|
| `observation/image`      | images["front"]    | images["agentview"]    |
| `observation/wrist_image`| images["wrist"]    | images["wrist"]        |
| `observation/state`      | state (float32[4]) | state (float32[8]: eef pos, axis-angle, 2 finger qpos) |
| `prompt`                 | instruction        | instruction            |

Images are uint8 [H, W, 3] as the suite rendered them (the LIBERO `openpi` preset already renders
openpi's rotated 224x224 frames); a client sends only the cameras the server's metadata asks for
(all mapped cameras when the server does not say).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import msgpack
import numpy as np

from benchmarks.base import ActionSpec, BenchError, Observation, ObservationSpec, PolicySpec, Suite

log = logging.getLogger(__name__)

SCHEME = "openpi://"
DEFAULT_PORT = 8000  # openpi's serve_policy.py default
BATCH_KEY = "apt/batch"
RESET_KEY = "apt/reset"
# What `apt-bench serve` puts in its metadata (openpi servers may send none of these).
METADATA_KEYS = ("protocol", "policy_id", "checkpoint_sha256", "suite", "action_spec", "action_dim",
                 "action_horizon", "cameras", "state_dim", "image_size", "openpi_keys", BATCH_KEY,
                 RESET_KEY, "max_message_bytes")
PROTOCOL = "apt-bench/openpi-websocket/1"
_ARRAY_KINDS = "biuf"  # bool, int, uint, float: the only array kinds accepted off the wire


class WireError(BenchError):
    """A frame that does not follow the protocol (the server answers it with an error frame)."""


class RemotePolicyError(BenchError):
    """The remote server refused a request, answered nonsense, or went away."""


# ---------------------------------------------------------------------------------------------------
# Codec: msgpack + numpy, byte-compatible with openpi_client.msgpack_numpy.


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"cannot send a numpy array of dtype {obj.dtype} (only bool/int/float)")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(),
                b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


def _unpack_hook(obj: dict) -> Any:
    """Rebuild arrays strictly: known numeric dtype, integer shape, and exactly the bytes it needs."""
    if b"__ndarray__" in obj:
        data, dtype, shape = obj[b"data"], np.dtype(obj[b"dtype"]), obj[b"shape"]
        if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
            raise ValueError(f"array dtype {dtype} is not allowed (only bool/int/uint/float)")
        if not isinstance(data, bytes) or not isinstance(shape, (list, tuple)) or not all(
                isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError("array map needs bytes data and a list of non-negative integer dims")
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"array of shape {tuple(shape)} and dtype {dtype} needs "
                             f"{math.prod(shape) * dtype.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"scalar dtype {dtype} is not allowed")
        return dtype.type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack_default)


def unpackb(data: bytes) -> Any:
    """Decode one frame; anything malformed (truncated, bad array, bad key type) is a WireError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("expected a binary msgpack frame, got a text frame")
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False)
    except Exception as err:  # msgpack raises several unrelated types on hostile input
        raise WireError(f"cannot decode the msgpack-numpy frame ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------------
# Observation keys per suite.


@dataclass(frozen=True)
class KeyMap:
    """openpi observation keys of one suite family (see the table in the module docstring)."""

    images: tuple[tuple[str, str], ...]  # (openpi key, our camera name)
    state: str = "observation/state"
    prompt: str = "prompt"

    def key_for(self, camera: str) -> str:
        for key, cam in self.images:
            if cam == camera:
                return key
        raise BenchError(f"camera {camera!r} has no openpi key; mapped cameras: "
                         f"{[c for _, c in self.images]}")

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(c for _, c in self.images)

    def as_dict(self) -> dict[str, str]:
        return {**{k: f"images[{c!r}]" for k, c in self.images}, self.state: "state",
                self.prompt: "instruction"}


KEY_MAPS: dict[str, KeyMap] = {
    "tabletop": KeyMap(images=(("observation/image", "front"), ("observation/wrist_image", "wrist"))),
    "libero": KeyMap(images=(("observation/image", "agentview"), ("observation/wrist_image", "wrist"))),
}


def key_map_for(suite_name: str) -> KeyMap:
    """The KeyMap of a suite: `tabletop`, or any `libero*` benchmark."""
    family = "libero" if suite_name.startswith("libero") else suite_name
    if family not in KEY_MAPS:
        raise BenchError(f"no openpi observation-key mapping for suite {suite_name!r}; mapped: "
                         f"{', '.join(KEY_MAPS)} (add one to apt/serving/codec.py:KEY_MAPS)")
    return KEY_MAPS[family]


def to_wire(obs: Observation, keys: KeyMap, cameras: Sequence[str]) -> dict[str, Any]:
    """Our Observation -> one openpi observation map (only the cameras the server asks for)."""
    msg: dict[str, Any] = {}
    for cam in cameras:
        if cam not in obs["images"]:
            raise BenchError(f"observation lacks camera {cam!r}; the remote policy needs {list(cameras)}")
        msg[keys.key_for(cam)] = np.ascontiguousarray(obs["images"][cam], dtype=np.uint8)
    msg[keys.state] = np.asarray(obs["state"], dtype=np.float32)
    msg[keys.prompt] = str(obs["instruction"])
    return msg


def from_wire(msg: Any, keys: KeyMap, cameras: Sequence[str], state_dim: int) -> Observation:
    """One openpi observation map -> our Observation, or a WireError naming what is wrong.

    Accepted: uint8 [H, W, 3] images for every camera in `cameras` (other mapped cameras are ignored),
    a numeric state of `state_dim` values (cast to float32), and a str prompt. Unknown keys are
    refused, so a misspelt key fails loudly instead of silently dropping a camera.
    """
    if not isinstance(msg, dict):
        raise WireError(f"an observation must be a map, got {type(msg).__name__}")
    mapped = {k for k, _ in keys.images} | {keys.state, keys.prompt}
    unknown = sorted(str(k) for k in msg if k not in mapped)
    if unknown:
        raise WireError(f"unknown observation keys {unknown}; expected {sorted(mapped)}")
    required = [keys.key_for(c) for c in cameras] + [keys.state, keys.prompt]
    missing = [k for k in required if k not in msg]
    if missing:
        raise WireError(f"observation lacks keys {missing}; this server needs {required}")
    images: dict[str, np.ndarray] = {}
    for cam in cameras:
        key = keys.key_for(cam)
        img = msg[key]
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 \
                or img.shape[0] == 0 or img.shape[1] == 0:
            raise WireError(f"{key!r} must be a uint8 [H, W, 3] array, got {_describe(img)}")
        images[cam] = img
    state = msg[keys.state]
    if not isinstance(state, np.ndarray) or state.dtype.kind not in "iuf" or state.shape != (state_dim,):
        raise WireError(f"{keys.state!r} must be a numeric array of shape ({state_dim},), "
                        f"got {_describe(state)}")
    if not np.isfinite(state).all():
        raise WireError(f"{keys.state!r} holds non-finite values")
    prompt = msg[keys.prompt]
    if not isinstance(prompt, str):
        raise WireError(f"{keys.prompt!r} must be a string, got {_describe(prompt)}")
    return Observation(images=images, state=state.astype(np.float32), instruction=prompt)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"array {x.dtype} {list(x.shape)}"
    return type(x).__name__


# ---------------------------------------------------------------------------------------------------
# The client policy.


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
                                    f"a numeric {want} array, got {_describe(actions)}")
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
