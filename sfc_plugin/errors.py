"""The one exception type for bad user input (the CLI turns it into exit 2)."""


class SFCError(ValueError):
    """Bad input: the message is one line and names the bad value."""
