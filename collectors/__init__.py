"""GPU collector agents: sample GPUs and publish ``GpuSample`` events."""
