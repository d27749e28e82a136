"""The wire schema of openpi's websocket protocol, shared by both sides.

One module holds the codec, the per-suite observation keys and the request checks, so `apt-bench
serve` (apt/serving/server.py) and the client behind `--policy openpi://HOST:PORT`
(apt/policies/openpi_client.py) cannot drift apart.

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

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import msgpack
import numpy as np

from benchmarks.base import BenchError, Observation

log = logging.getLogger(__name__)

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
            raise WireError(f"{key!r} must be a uint8 [H, W, 3] array, got {describe(img)}")
        images[cam] = img
    state = msg[keys.state]
    if not isinstance(state, np.ndarray) or state.dtype.kind not in "iuf" or state.shape != (state_dim,):
        raise WireError(f"{keys.state!r} must be a numeric array of shape ({state_dim},), "
                        f"got {describe(state)}")
    if not np.isfinite(state).all():
        raise WireError(f"{keys.state!r} holds non-finite values")
    prompt = msg[keys.prompt]
    if not isinstance(prompt, str):
        raise WireError(f"{keys.prompt!r} must be a string, got {describe(prompt)}")
    return Observation(images=images, state=state.astype(np.float32), instruction=prompt)


def describe(x: Any) -> str:
    """A received value, for an error message: an array's dtype and shape, else its type."""
    if isinstance(x, np.ndarray):
        return f"array {x.dtype} {list(x.shape)}"
    return type(x).__name__
