"""authsvc: an async authentication service for Kubernetes."""

from __future__ import annotations

__version__ = "0.1.0"
