"""ltfsee-globus: tape staging for IBM Spectrum Archive EE behind Globus and WLCG clients."""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """Import the web app only when asked, so `eeadm-sim` starts without Flask."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
