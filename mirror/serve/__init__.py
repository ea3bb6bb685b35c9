"""The HTTP app: ``create_app`` and one router module per area, shared auth and error bodies,
Prometheus metrics.
"""

from mirror.serve.app import create_app

__all__ = [
    "create_app",
]
