"""The device seam: GPUs (NVML), simulated GPUs and the host CPU behind one interface."""
