"""Everything that knows the hardware: host CPU targets and schedules (and, later, the NPU)."""
