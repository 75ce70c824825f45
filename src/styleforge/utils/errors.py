"""Exception types for user-facing problems; the CLI prints their message without a traceback."""

from __future__ import annotations

__all__ = ["StyleforgeError", "UserInputError"]


class StyleforgeError(Exception):
    """Base class for errors styleforge reports to users."""


class UserInputError(StyleforgeError, ValueError):
    """A problem with something the user supplied (a path, an image, a pickle, an option); the message names the fix."""
