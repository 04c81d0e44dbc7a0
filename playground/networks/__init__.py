"""Neural network modules shared by training code (encoders for pixel students)."""
