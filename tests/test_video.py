"""Videos and cameras without an OpenGL context (issue 13): the per-family camera, labelled side-by-side frames,
episodes of different lengths; and `x_velocity` in `info` as a family's choice. Real rendering: test_evaluate.py's
EGL test (skipped where EGL cannot make a context)."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from metarl import registry
from metarl.camera import Camera, render_camera, robot_radius
from metarl.cli import main
from metarl.family import MujocoFamily
from metarl.gym_adapter import TaskEnv
from metarl.video import label_frame, side_by_side


def test_a_family_camera_follows_the_robot_by_default() -> None:
    family = registry.make("HalfCheetahVel-v0")
    assert isinstance(render_camera(family.model, family.camera), int)  # the built-ins use their MJCF's "track"
    camera = render_camera(family.model, Camera())  # MujocoFamily's default: follow body 1 (the torso) from the side
    assert isinstance(camera, mujoco.MjvCamera) and camera.type == mujoco.mjtCamera.mjCAMERA_TRACKING
    assert camera.trackbodyid == 1 and camera.distance == pytest.approx(4 * robot_radius(family.model))
    assert 2.0 < camera.distance < 5.0  # a cheetah (about a metre long) fills a good part of the frame
    custom = render_camera(family.model, Camera(track="torso", distance=3.0, elevation=-10.0, azimuth=45.0))
    assert (custom.trackbodyid, custom.distance, custom.elevation, custom.azimuth) == (1, 3.0, -10.0, 45.0)
    assert MujocoFamily.camera == Camera()


def view_angle(model: mujoco.MjModel, data: mujoco.MjData, camera: int | mujoco.MjvCamera, body: int) -> float:
    """Degrees between the rendered camera's view axis and the direction to `body`, computed by MuJoCo's own scene
    update (no OpenGL needed): below half the field of view (22.5°) the body is in the picture."""
    if isinstance(camera, int):
        fixed = mujoco.MjvCamera()
        fixed.type, fixed.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, camera
        camera = fixed
    elif camera.type == mujoco.mjtCamera.mjCAMERA_TRACKING:
        camera.lookat[:] = data.subtree_com[camera.trackbodyid]  # as TaskEnv.render does at an episode's start
    scene = mujoco.MjvScene(model, maxgeom=1000)
    mujoco.mjv_updateScene(model, data, mujoco.MjvOption(), mujoco.MjvPerturb(), camera, mujoco.mjtCatBit.mjCAT_ALL,
                           scene)
    eye, forward = np.array(scene.camera[0].pos), np.array(scene.camera[0].forward)
    to_body = data.xpos[body] - eye
    return float(np.degrees(np.arccos(forward @ to_body / np.linalg.norm(to_body))))


@pytest.mark.parametrize("xml", ["half_cheetah", "hopper"])
def test_the_camera_keeps_a_robot_in_the_picture_far_from_the_origin(xml: str) -> None:
    """10 m down the track the default camera (and the cheetah's own) still looks at the torso; MuJoCo's free camera,
    what rendering used for a model without cameras, has lost it."""
    from pathlib import Path

    import gymnasium

    path = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / f"{xml}.xml"
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    data.qpos[0] = 10.0  # rootx: the robot has run 10 m
    mujoco.mj_forward(model, data)
    cameras = [render_camera(model, Camera())] + ([render_camera(model, "track")] if model.ncam else [])
    for camera in cameras:
        assert view_angle(model, data, camera, body=1) < 15.0  # well inside the 45° field of view
    free = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, free)
    assert view_angle(model, data, free, body=1) > 22.5


def test_a_camera_the_model_lacks_is_refused_with_what_it_has() -> None:
    model = registry.make("HalfCheetahVel-v0").model
    with pytest.raises(ValueError, match="no camera 'side'; its cameras: track"):
        render_camera(model, "side")
    with pytest.raises(ValueError, match="no body 'head' to track; its bodies: world, torso"):
        render_camera(model, Camera(track="head"))
    with pytest.raises(ValueError, match="no camera 'side'"):  # at construction, before any episode
        TaskEnv("HalfCheetahVel-v0", render_mode="rgb_array", camera="side")


def test_eval_refuses_an_unknown_video_camera_before_evaluating(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "maml", "--family", "HalfCheetahVel-v0", "--run.family-kwargs", "horizon", "5",
                 "--meta-batch-size", "2", "--episodes-per-task", "2", "--policy.hidden", "8", "--run.iterations",
                 "0", "--run.no-tensorboard", "--run.runs-dir", str(runs)]) == 0
    (run_dir,) = runs.glob("*")
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--tasks", "1", "--steps", "1", "--episodes", "1", "--quiet", "--video",
                 "--video-camera", "side"]) == 2
    assert "no camera 'side'; its cameras: track" in capsys.readouterr().out
    assert not list(run_dir.glob("eval*"))


def test_frames_are_labelled_and_a_shorter_episode_holds_its_last_frame() -> None:
    frame = lambda value: np.full((48, 64, 3), value, dtype=np.uint8)  # noqa: E731
    before = [frame(100), frame(110)]  # the robot fell after one step
    after = [frame(200), frame(210), frame(220), frame(230)]
    frames = side_by_side(before, after, ("before adaptation", "after 3 steps"))
    assert len(frames) == 4 and all(f.shape == (48, 128, 3) for f in frames)
    assert (frames[3][-1, :64] == 110).all() and (frames[3][-1, 64:] == 230).all()  # held / playing on
    labelled = label_frame(frame(100), "before adaptation")
    band = labelled[:13]  # at least 12 pixels (a twelfth of the height) and its edge
    assert (band == 32).any() and band.max() > 200  # a dark band with white (anti-aliased) text along the top
    assert (labelled[13:] == 100).all()  # the picture below is untouched
    assert not np.array_equal(label_frame(frame(100), "before adaptation"), label_frame(frame(100), "after 1 step"))


def test_x_velocity_in_info_is_the_familys_choice() -> None:
    family = registry.make("HalfCheetahVel-v0", horizon=5)
    tasks = family.make_tasks(goal_vel=[1.0])
    env = family.make_env(1)
    env.reset(tasks, torch.Generator().manual_seed(0))
    action = torch.zeros(1, family.act_dim, dtype=torch.float64)
    assert "x_velocity" in env.step(tasks, action).info  # a walker: it has a forward axis
    family.reports_x_velocity = False  # type: ignore[misc]  # e.g. a reacher: no forward axis
    step = env.step(tasks, action)
    assert "x_velocity" not in step.info and set(step.info) == {"reward_forward", "reward_ctrl"}
    assert torch.equal(torch.stack(list(step.info.values())).sum(0), step.reward)
