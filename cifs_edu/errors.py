"""The library's one error type for bad input: :class:`ConfigError`.

Raised before any work starts, with one message naming the value and the fix (the CLI prints it
without a traceback and exits 2). It lives in its own module so that every module can raise it
without importing the profiles (``cifs_edu.profiles.ConfigError`` is the same class).
"""
from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An impossible or unknown configuration value (raised before any work starts)."""
