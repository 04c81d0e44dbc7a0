"""Names and nominal values of the ALOHA 2 model in xmls/aloha (sources: the XML comments)."""

from playground.envs.base import XML_DIR

PICK_XML = XML_DIR / "aloha" / "pick.xml"
PEG_INSERTION_XML = XML_DIR / "aloha" / "peg_insertion.xml"

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
FINGER_JOINTS = ("left_finger", "right_finger")
ACTUATORS = ARM_JOINTS + ("gripper",)
GRIPPER_OPEN_M = 0.037  # finger travel per side at the open software limit (gap 74 mm)
GRIPPER_CLOSED_M = 0.002
# Pick "home": arm raised above the table, gripper open.
HOME_ARM_QPOS = (0.0, -0.4, 1.5, 0.0, -0.73, 0.0)
PAD_HALF_LENGTH_M = (
    0.0275  # finger pads span pinch x +- this (capsules 0.085..0.14 in gripper_link)
)
PAD_HALF_HEIGHT_M = 0.017  # pad capsules at z = +-0.011, radius 0.006
PAD_TIP_BELOW_PINCH_M = 0.031  # pad capsules end 0.025 past the pinch site, radius 0.006
