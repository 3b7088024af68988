"""streamapp: storage events as a service for federated science clouds."""

__version__ = "0.1.0"
