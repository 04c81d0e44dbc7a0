"""Neural networks: the NatureCNN encoder (`nature_cnn`), the pixel student (`student`) and brax's
PPO actor-critic built from a plain description (`ppo`), which the trainer and the policy files
share."""
