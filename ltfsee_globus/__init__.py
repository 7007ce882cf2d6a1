"""ltfsee-globus: tape staging for IBM Spectrum Archive EE behind Globus and WLCG clients."""

from .app import create_app

__all__ = ["create_app"]
