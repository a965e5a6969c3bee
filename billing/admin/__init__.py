"""Billing's admin: API keys (``api_keys``) and usage records (``usage_records``).

Django's autodiscovery imports this package; importing the modules registers their admins.
"""

from __future__ import annotations

from billing.admin import api_keys, usage_records

__all__ = ["api_keys", "usage_records"]
