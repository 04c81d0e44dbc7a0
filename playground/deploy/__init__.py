"""Exported policies on a robot.

- export.py, export_cli.py: policy files (teacher, student, the Aloha composite) to ONNX with a
  parity gate; the command line of experimental/jax2onnx/aloha_nets_to_onnx.py.
- onnx_policy.py: an ONNX file on onnxruntime, its inputs and outputs checked.
- robot.py: the `Robot` interface a driver implements (readings, targets, hold, stop).
- obs_builder.py: readings (joints, tracked objects, cameras) to policy inputs, actions to
  actuator targets, through the task's own `robot_*` hooks.
- safety.py: the safety layer between the policy and the joints.
- runner.py: the control loop, its faults and its watchdog.
- sim_robot.py, sim2sim.py: a native-MuJoCo stand-in robot and the sim-to-sim command line.

Imports envs and files, never training.
"""
