"""dpctl: a dual-pods controller for fast model actuation of vLLM on Kubernetes."""

__version__ = "0.1.0"
