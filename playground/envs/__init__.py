"""Tasks and the machinery they share (base env, wrappers, delays, randomisation)."""
