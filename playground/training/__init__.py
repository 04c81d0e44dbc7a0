"""Training utilities shared by the trainers (policy files, and later checkpoints and logs)."""
