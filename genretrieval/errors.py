"""The one exception type for user-facing errors; the CLI prints its message on one line."""


class GenRetError(ValueError):
    """A problem with the user's input or environment, explained in one line."""
