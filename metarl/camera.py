"""How videos and `TaskEnv.render` frame a MuJoCo family: a `Camera` per family (`MujocoFamily.camera`), overridable.

The default follows the robot's root body (body 1, the first after the world) from the side, at a distance scaled to
the robot's size, so a walker never leaves the frame (issue 13: a custom Hopper rendered from the free camera at the
origin walked out of view). A family sets its own, e.g. ``camera = Camera(track="torso", distance=3.0)``, or names a
camera of its MJCF, ``camera = Camera(name="side")``; `metarl eval --video --video-camera NAME` overrides either.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class Camera:
    """A named camera of the model, or a camera tracking one body.

    Attributes:
        name: a camera defined in the model (MJCF ``<camera name=...>``, fixed or tracking as it defines); when set,
            the other fields are ignored.
        track: the body followed (name or id; 0, the world, gives a fixed view of the whole model).
        distance: metres from the tracked body's centre of mass; None: 4 × the robot's radius (`robot_radius`).
        elevation: degrees; negative looks down.
        azimuth: degrees; 90 looks along +y, i.e. from the side at a robot moving along +x.
    """

    name: str | None = None
    track: str | int = 1
    distance: float | None = None
    elevation: float = -20.0
    azimuth: float = 90.0


def robot_radius(model: mujoco.MjModel) -> float:
    """Metres: the largest distance from the robot's centre of mass to the far side of one of its geoms, in the
    model's initial pose (geoms of the world body, the floor, excluded)."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    mine = model.geom_bodyid > 0
    if not mine.any():
        return 1.0
    center = data.subtree_com[0]
    return float(np.max(np.linalg.norm(data.geom_xpos[mine] - center, axis=1) + model.geom_rbound[mine]))


def render_camera(model: mujoco.MjModel, camera: Camera | str) -> int | mujoco.MjvCamera:
    """What `mujoco.Renderer.update_scene` takes for `camera` (a `Camera`, or a model camera's name); a ValueError
    names what the model has when the camera or body does not exist."""
    if isinstance(camera, str):
        camera = Camera(name=camera)
    if camera.name is not None:
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera.name)
        if cam_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ValueError(f"the model has no camera {camera.name!r}; its cameras: {', '.join(names) or 'none'}")
        return cam_id
    body = camera.track
    if isinstance(body, str):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
    if not 0 <= body < model.nbody:
        names = [model.body(i).name for i in range(model.nbody)]
        raise ValueError(f"the model has no body {camera.track!r} to track; its bodies: {', '.join(names)}")
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    cam.trackbodyid = body
    cam.distance = camera.distance if camera.distance is not None else 4.0 * robot_radius(model)
    cam.elevation, cam.azimuth = camera.elevation, camera.azimuth
    return cam
