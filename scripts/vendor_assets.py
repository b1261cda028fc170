"""Regenerate envs/assets/*.xml from Gymnasium's MuJoCo assets, with HalfCheetah's masses baked in.

Gymnasium's half_cheetah.xml uses `<compiler settotalmass="14">`, which MuJoCo 4 deprecates (a warning on every
compile). We replace it with an explicit `<inertial>` per body holding the exact compiled mass, inertia and frame,
and check that the compiled model is bitwise identical to Gymnasium's. Run: python scripts/vendor_assets.py
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import gymnasium
import mujoco
import numpy as np

SRC = Path(os.path.dirname(gymnasium.__file__)) / "envs" / "mujoco" / "assets"
DST = Path(__file__).resolve().parent.parent / "envs" / "assets"
HEADER = (
    "<!-- Vendored from Gymnasium {version} envs/mujoco/assets/{name} by scripts/vendor_assets.py.{extra} -->\n"
)
# Fields that must match bit for bit between the vendored and the original compiled model.
CHECKED = ("body_mass", "body_inertia", "body_ipos", "body_iquat", "body_pos", "body_quat", "geom_size",
           "geom_pos", "geom_quat", "dof_armature", "dof_damping", "jnt_range", "actuator_gear", "opt.timestep")


def _fmt(values: np.ndarray) -> str:
    return " ".join(repr(float(v)) for v in values)


def bake_inertials(name: str) -> str:
    """Return `name`'s XML with explicit inertials and no settotalmass."""
    model = mujoco.MjModel.from_xml_path(str(SRC / name))
    tree = ET.parse(SRC / name)
    root = tree.getroot()
    compiler = root.find("compiler")
    assert compiler is not None
    compiler.attrib.pop("settotalmass", None)
    compiler.set("inertiafromgeom", "false")
    for body in root.iter("body"):
        bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body.get("name"))
        inertial = ET.Element("inertial", {
            "pos": _fmt(model.body_ipos[bid]), "quat": _fmt(model.body_iquat[bid]),
            "mass": repr(float(model.body_mass[bid])), "diaginertia": _fmt(model.body_inertia[bid]),
        })
        body.insert(0, inertial)
    ET.indent(tree)
    return ET.tostring(root, encoding="unicode")


def check_identical(name: str, text: str) -> None:
    ref = mujoco.MjModel.from_xml_path(str(SRC / name))
    new = mujoco.MjModel.from_xml_string(text)
    for field in CHECKED:
        if field.startswith("opt."):
            a, b = getattr(ref.opt, field[4:]), getattr(new.opt, field[4:])
        else:
            a, b = getattr(ref, field), getattr(new, field)
        if not np.array_equal(a, b):
            raise SystemExit(f"{name}: {field} differs by {np.abs(np.asarray(a) - np.asarray(b)).max()}")


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    cheetah = bake_inertials("half_cheetah.xml")
    check_identical("half_cheetah.xml", cheetah)
    extra = " settotalmass replaced by explicit inertials (bitwise-identical compiled model)."
    (DST / "half_cheetah.xml").write_text(HEADER.format(version=gymnasium.__version__, name="half_cheetah.xml",
                                                        extra=extra) + cheetah + "\n")
    ant = (SRC / "ant.xml").read_text()
    check_identical("ant.xml", ant)
    (DST / "ant.xml").write_text(HEADER.format(version=gymnasium.__version__, name="ant.xml", extra="") + ant)
    print(f"wrote {DST}/half_cheetah.xml and ant.xml; compiled fields identical to Gymnasium's")


if __name__ == "__main__":
    main()
