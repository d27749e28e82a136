"""Optional per-episode MP4 of the first camera; a do-nothing recorder when videos are off.

The engine asks `make_recorder` for one recorder per episode and calls `add(obs)` after reset and
after every step, then `finish()`, which returns the file's path ("" for the null recorder) for the
episode record. Frames are encoded at the end of the episode (episodes are short; one write per file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.base import Observation

FPS = 10  # the tabletop suite's control rate


class NullRecorder:
    """Videos off: records nothing, returns no path."""

    def add(self, obs: Observation) -> None:
        pass

    def finish(self) -> str:
        return ""


class VideoRecorder:
    """Collects the frames of one camera and writes them as an H.264 MP4 (imageio-ffmpeg)."""

    def __init__(self, path: str | Path, camera: str | None = None, fps: int = FPS):
        self.path = Path(path)
        self.camera = camera
        self.fps = fps
        self.frames: list[np.ndarray] = []

    def add(self, obs: Observation) -> None:
        images = obs.get("images") or {}
        if not images:
            return
        cam = self.camera if self.camera in images else next(iter(images))
        self.frames.append(np.asarray(images[cam], dtype=np.uint8))

    def finish(self) -> str:
        if not self.frames:
            return ""
        import imageio.v2 as imageio  # lazy: ffmpeg only when videos are asked for

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # macro_block_size=1: keep small frames (e.g. 96x96 is fine, stubs are 8x8) unresized.
        imageio.mimwrite(self.path, self.frames, fps=self.fps, codec="libx264", macro_block_size=1)
        self.frames = []
        return str(self.path)


def make_recorder(video_dir: str | None, key: str, camera: str | None = None):
    """A VideoRecorder writing `<video_dir>/<key>.mp4`, or the null recorder when video_dir is None."""
    if not video_dir:
        return NullRecorder()
    return VideoRecorder(Path(video_dir) / f"{key}.mp4", camera=camera)
