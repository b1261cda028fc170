"""`metarl eval --video`: one episode per test task before and after adaptation, side by side, as an animated GIF.

Frames come from MuJoCo's offscreen renderer through `metarl.TaskEnv(render_mode="rgb_array")`, which needs an
OpenGL backend: a display, or `MUJOCO_GL=egl` (or `osmesa`) set before mujoco is imported. Without one, and for
families that are not MuJoCo models (PointNav), `record_videos` says so in one line and the evaluation goes on.
Episodes act with the policy's mean action (the behaviour the adaptation produced, without exploration noise).
Each frame is labelled ("before adaptation", "after k steps"); the family's `camera` (metarl/camera.py: by default
following the robot's root body) frames it, or a camera of the model named with `--video-camera`. An episode that
ends early (the robot fell) holds its last frame while the other plays on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.camera import Camera
from metarl.family import MujocoFamily, TaskFamily, index_tasks, num_tasks
from metarl.gym_adapter import TaskEnv
from metarl.policies import Params, forward

FRAME_STRIDE = 2
"""Keep every 2nd frame: halves the GIF size; 200-step episodes still play for several seconds."""


def record_videos(family: TaskFamily, policy: nn.Module, params: Params, result: Any, out_dir: Path,
                  n_tasks: int = 2, size: int = 240, camera: Camera | str | None = None) -> str:
    """Write `out_dir/task<t>.gif` (left: before adaptation, right: after k steps, each labelled) for the first
    `n_tasks` test tasks of `result` (an `EvalResult`); returns a one-line message saying what was written or why
    nothing was. `camera`: the family's own when None (`MujocoFamily.camera`)."""
    if not isinstance(family, MujocoFamily):
        return f"video: {family.id} is not a MuJoCo family, nothing to render"
    if result.adapted is None:
        return "video: the adapted parameters are not available for this algorithm/step count; no video"
    steps = len(result.step_sizes)
    labels = ("before adaptation", f"after {steps} step{'s' if steps != 1 else ''}")
    written = []
    for t in range(min(n_tasks, num_tasks(result.tasks))):
        task = index_tasks(result.tasks, slice(t, t + 1))
        try:
            before = episode_frames(family, policy, params, task, size, camera)
            after = episode_frames(family, policy, {k: v[t] for k, v in result.adapted.items()}, task, size, camera)
        except RuntimeError:  # TaskEnv.render: MuJoCo could not create an OpenGL context
            return ("video: no OpenGL backend for MuJoCo's offscreen renderer (no display; set MUJOCO_GL=egl or "
                    "osmesa before running metarl), continuing without video")
        written.append(write_gif(side_by_side(before, after, labels), out_dir / f"task{t}.gif", fps=_fps(family)))
    return f"video: {len(written)} GIFs (left: before adaptation, right: after) in {out_dir}"


def side_by_side(left: list[np.ndarray], right: list[np.ndarray], labels: tuple[str, str]) -> list[np.ndarray]:
    """Frames [H, 2W, 3]: each pair labelled; the shorter episode (one that terminated) holds its last frame."""
    n = max(len(left), len(right))
    left, right = (frames + [frames[-1]] * (n - len(frames)) for frames in (left, right))
    return [np.concatenate([label_frame(a, labels[0]), label_frame(b, labels[1])], axis=1)
            for a, b in zip(left, right, strict=True)]


def label_frame(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of uint8 [H, W, 3] `frame` with `text` in white on a dark band along its top edge."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    height = max(12, frame.shape[0] // 12)
    draw.rectangle((0, 0, frame.shape[1], height), fill=(32, 32, 32))
    draw.text((4, 1), text, fill=(255, 255, 255))
    return np.asarray(image)


def episode_frames(family: TaskFamily, policy: nn.Module, params: Params, task: Any, size: int,
                   camera: Camera | str | None = None) -> list[np.ndarray]:
    """uint8 [size, size, 3] frames of one mean-action episode of `task` (a Tasks with T = 1), seed 0."""
    env = TaskEnv(family, task=task, render_mode="rgb_array", width=size, height=size, camera=camera)
    dtype = next(iter(params.values())).dtype
    try:
        obs, _ = env.reset(seed=0)
        frames = [env.render()]
        for h in range(family.horizon):
            with torch.no_grad():
                mean = forward(policy, params, torch.as_tensor(obs, dtype=dtype)[None]).mean[0]
            obs, _, terminated, _, _ = env.step(mean.double().numpy())
            if h % FRAME_STRIDE == FRAME_STRIDE - 1:
                frames.append(env.render())
            if terminated:
                break
    finally:
        env.close()
    return [f for f in frames if f is not None]


def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """An animated GIF through Pillow (a matplotlib dependency: no ffmpeg needed)."""
    import io

    from PIL import Image

    from metarl.runs import atomic_write_bytes

    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 * FRAME_STRIDE / fps), loop=0)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _fps(family: MujocoFamily) -> float:
    return 1.0 / (float(family.model.opt.timestep) * family.frame_skip)
