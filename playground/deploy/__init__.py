"""Running exported policies on a robot: safety limits between the policy and the joints."""
