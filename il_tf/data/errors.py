"""The one exception type for missing or unreadable data."""

from __future__ import annotations


class DataError(ValueError):
    """Data that a source needs is missing, unprepared or unreadable.

    The message names the source, what is wrong (the missing path, the empty class folder,
    the unreadable file) and how to get the data.
    """
