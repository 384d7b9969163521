"""A stand-in for `vllm serve` on simulated GPUs, and the simulated GPUs it shares with the kubelet."""
