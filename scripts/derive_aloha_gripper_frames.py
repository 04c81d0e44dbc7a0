"""Derive the gripper numbers written in xmls/aloha/vx300s.xml.

The published ViperX 300 S model places `gripper_base` rotated by euler (0, 1.57, -1.57) in
`gripper_link`, and each finger rotated again inside `gripper_base`. Our model keeps every body
after `gripper_link` axis-aligned with it (x = approach, y = finger travel), which makes the
primitive geoms easy to write and check. This script rotates the published inertials (mass,
centre of mass, principal axes) and finger origins into that frame and prints them, so the XML
numbers can be traced to the fact sheet (shared research, robot_specs.md tables A1 and A2).

Run: python scripts/derive_aloha_gripper_frames.py
"""

import mujoco
import numpy as np


def quat_from_euler_xyz(euler: tuple[float, float, float]) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_euler2Quat(q, np.asarray(euler, dtype=float), "xyz")
    return q


def normalised(q) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    return q / np.linalg.norm(q)


def mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def rotate(q: np.ndarray, v) -> np.ndarray:
    out = np.zeros(3)
    mujoco.mju_rotVecQuat(out, np.asarray(v, dtype=float), q)
    return out


def main() -> None:
    q_gb = quat_from_euler_xyz((0.0, 1.57, -1.57))  # gripper_base in gripper_link
    p_gb = np.array([0.035, 0.0, 0.0])
    gb_inertial = dict(
        pos=[0.000182154, -0.0341589, -0.0106026],
        quat=[0.435286, 0.557074, -0.551539, 0.442718],
    )
    print("gripper_base inertial in gripper_link-aligned frame (body at 0.035 0 0):")
    print("  pos ", np.round(rotate(q_gb, gb_inertial["pos"]), 7))
    print("  quat", np.round(normalised(mul(q_gb, normalised(gb_inertial["quat"]))), 6))
    fingers = {
        "left": dict(
            pos=[0.0191, -0.0141637, 0.0211727],
            quat=[1, -1, -1, 1],
            ipos=[0.0143478, -0.0284791, 0.0122897],
            iquat=[0.535486, 0.458766, -0.450407, 0.547651],
        ),
        "right": dict(
            pos=[-0.0191, -0.0141637, 0.0211727],
            quat=[1, 1, 1, 1],
            ipos=[0.0143711, 0.0284792, 0.0121421],
            iquat=[0.461317, 0.537615, -0.545478, 0.447894],
        ),
    }
    for name, f in fingers.items():
        q_f = mul(q_gb, normalised(f["quat"]))  # finger frame in gripper_link
        origin = p_gb + rotate(q_gb, f["pos"])
        print(f"{name}_finger origin in gripper_link: {np.round(origin, 7)}")
        print("  slide axis (0 0 -1) in gripper_link:", np.round(rotate(q_f, [0, 0, -1]), 4))
        # Our finger body sits at the origin with gripper_link's orientation.
        print("  inertial pos ", np.round(rotate(q_f, f["ipos"]), 7))
        print("  inertial quat", np.round(normalised(mul(q_f, normalised(f["iquat"]))), 6))


if __name__ == "__main__":
    main()
