"""The policy-file format's old import path, kept for users' code: the format now lives in
playground/files/policy_file.py, below the envs and the deploy code that both read it."""

from playground.files.policy_file import (  # noqa: F401
    ACTIVATIONS,
    BEST_POLICY_FILE,
    FORMAT,
    POLICY_FILE,
    STUDENT_FILE,
    STUDENT_FORMAT,
    SUFFIX,
    LegacyPolicyFileError,
    PolicyFileError,
    load_policy_fn,
    make_policy_fn,
    make_student_fn,
    ppo_networks_of,
    read_policy,
    read_student,
    save_policy,
    save_student,
)
