"""The one exception type users see: the CLI prints it as a single line and exits non-zero."""


class CotdistillError(Exception):
    """A user-facing error. The message is one line and names the file and field at fault."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line
