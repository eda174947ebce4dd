"""What a build tells its user: placement (where each layer runs and why), per-layer int8
accuracy, and the profile of a run."""
