"""Training a found network from scratch: the loop, its step, schedules and optimizer."""
