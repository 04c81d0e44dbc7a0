"""ALOHA 2 tasks: AlohaS2RPick, AlohaS2RPegInsertion and AlohaS2RPegInsertionDistill.

- constants.py: names and nominal values of the model; arm.py: one arm's indices, frames,
  observations, grasp test and robot-side limits, shared by every Aloha task.
- pick.py, peg_insertion.py, distill.py: the tasks (each file holds its whole task).
- composite.py: the composite teacher of the whole bimanual task (pick per arm, then insertion).
- scripted.py: the scripted grasp-and-lift that proves the tasks feasible and builds lifted states.
"""
