"""Names and nominal values of the Panda model in xmls/franka (sources: the XML comments)."""

from playground.envs.base import XML_DIR

REACH_XML = XML_DIR / "franka" / "reach.xml"
BOX_XML = XML_DIR / "franka" / "box.xml"

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
GRIPPER_ACTUATOR = "gripper"
GRIPPER_OPEN_M = 0.04  # travel per finger; the pad gap is twice this
TCP_SITE = "tcp"
HAND_BODY = "hand"
# Franka's published speed limits: arm joints in rad/s (Panda datasheet), fingers in m/s (URDF).
ARM_MAX_SPEED_RAD_S = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
FINGER_MAX_SPEED_M_S = 0.2
