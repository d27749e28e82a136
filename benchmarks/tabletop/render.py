"""Headless rendering for the tabletop suite: GL backend choice and ONE renderer per process.

Non-obvious behaviour (see reference/feasibility.md):
- MuJoCo reads `MUJOCO_GL` when it is first imported, so the backend is chosen before that:
  `import_mujoco()` is the only way this suite imports mujoco. A user-set `MUJOCO_GL` is respected;
  otherwise `egl` then `osmesa` are probed in a short subprocess (a failing GL driver can abort
  the process, so it is never tried in-process). The choice is written to `os.environ`, so worker
  processes started later inherit it and do not probe again.
- Under OSMesa two GL contexts in one process give garbage frames from the first one, so there is
  exactly one `Renderer` per process (one GL context, one offscreen buffer); every camera and
  every environment of the process renders through it in turn. A request for a bigger image than
  the buffer rebuilds it. After a fork the child builds its own (GL contexts do not survive forks).
- Nothing is rendered, and no GL context is made, when an environment asks for no camera.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np

from benchmarks.base import BenchError

# Debian packages that provide each backend (named in errors; CI installs them).
DEBIAN_PACKAGES = {
    "egl": "libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
}
_PROBE_ORDER = ("egl", "osmesa")

_PROBE_CODE = """
import os, sys
os.environ["MUJOCO_GL"] = sys.argv[1]
import mujoco, numpy as np
m = mujoco.MjModel.from_xml_string(
    '<mujoco><visual><global offwidth="8" offheight="8"/></visual><worldbody>'
    '<geom type="box" size=".1 .1 .1" rgba="1 0 0 1"/></worldbody></mujoco>')
r = mujoco.Renderer(m, 8, 8)
d = mujoco.MjData(m); mujoco.mj_forward(m, d); r.update_scene(d); r.render(); r.close()
print("ok")
"""

_backend_error: str | None = None  # why no backend works (only set when probing failed)


def _probe(backend: str, timeout: float = 60.0) -> tuple[bool, str]:
    env = dict(os.environ)
    env.pop("PYOPENGL_PLATFORM", None)
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE_CODE, backend], env=env, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "probe timed out"
    ok = out.returncode == 0 and out.stdout.strip().endswith("ok")
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return ok, tail


def select_gl_backend() -> str | None:
    """Set MUJOCO_GL (if the user has not) to the first backend that renders; cached in os.environ.

    Returns the backend name, or None when none works (physics still runs; rendering then raises).
    Must run before mujoco is first imported to have any effect.
    """
    global _backend_error
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    if _backend_error is not None:
        return None
    reasons = []
    for backend in _PROBE_ORDER:
        ok, why = _probe(backend)
        if ok:
            os.environ["MUJOCO_GL"] = backend
            return backend
        reasons.append(f"{backend}: {why}")
    _backend_error = "; ".join(reasons)
    return None


def import_mujoco() -> Any:
    """Import mujoco after choosing the GL backend (the only way this suite imports it)."""
    if "mujoco" not in sys.modules:
        select_gl_backend()
    try:
        import mujoco
    except RuntimeError as e:  # mujoco rejects an unknown MUJOCO_GL at import time
        if "MUJOCO_GL" not in str(e):
            raise
        raise BenchError(f"{e}; use MUJOCO_GL=egl or MUJOCO_GL=osmesa, or unset it to let the "
                         f"tabletop suite probe for a working backend") from e
    return mujoco


def _no_backend_message(detail: str) -> str:
    pkgs = " ".join(DEBIAN_PACKAGES.values())
    return (f"cannot render the tabletop suite headless ({detail}). Install the OpenGL libraries "
            f"(Debian/Ubuntu: `apt-get install -y {pkgs}`) or set MUJOCO_GL to a working backend "
            f"(egl or osmesa); or make the environment with cameras=() to run without images")


class Renderer:
    """One offscreen GL context for one model; renders any camera at any size up to its buffer."""

    def __init__(self, model: Any, size: int):
        mujoco = import_mujoco()
        if os.environ.get("MUJOCO_GL") is None:
            raise BenchError(_no_backend_message(_backend_error or "no GL backend selected"))
        self.model = model
        self.size = size
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        try:
            from mujoco import gl_context

            self._gl = gl_context.GLContext(size, size)
            self._gl.make_current()
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except Exception as e:  # the driver's own error type varies by backend
            raise BenchError(_no_backend_message(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
                                                 f"{type(e).__name__}: {e}")) from e
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mujoco.MjvScene(model, maxgeom=200)
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._mujoco = mujoco

    def render(self, data: Any, camera_id: int, height: int, width: int) -> np.ndarray:
        """uint8[height, width, 3] from fixed camera `camera_id` of `data`'s current state."""
        mj = self._mujoco
        self._gl.make_current()
        self._cam.fixedcamid = camera_id
        mj.mjv_updateScene(self.model, data, self._opt, None, self._cam, mj.mjtCatBit.mjCAT_ALL, self._scene)
        rect = mj.MjrRect(0, 0, width, height)
        mj.mjr_render(rect, self._scene, self._con)
        out = np.empty((height, width, 3), dtype=np.uint8)
        mj.mjr_readPixels(out, None, rect, self._con)
        return out[::-1].copy()  # OpenGL rows are bottom-up

    def close(self) -> None:
        if getattr(self, "_con", None) is not None:
            self._con.free()
            self._con = None
        if getattr(self, "_gl", None) is not None:
            self._gl.free()
            self._gl = None


_renderer: Renderer | None = None
_renderer_pid: int | None = None


def get_renderer(model: Any, size: int) -> Renderer:
    """The process's one renderer, (re)built for `model` with a buffer of at least `size` pixels."""
    global _renderer, _renderer_pid
    if _renderer_pid != os.getpid():
        _renderer = None  # inherited through a fork: unusable, never free it from the child
    if _renderer is None or _renderer.model is not model or _renderer.size < size:
        if _renderer is not None:
            _renderer.close()
        _renderer = Renderer(model, size)
        _renderer_pid = os.getpid()
    return _renderer
