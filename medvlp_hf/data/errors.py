"""Errors raised by the data layer; both are ValueErrors so callers can catch bad input in one place."""


class DataFormatError(ValueError):
    """A dataset file or one of its records does not have the expected layout (the message names it)."""


class ImageDecodingError(ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated, unsupported); the message names it."""
