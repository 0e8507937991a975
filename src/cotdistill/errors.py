"""The one exception type users see: the CLI prints it as a single line and exits non-zero."""


class CotdistillError(Exception):
    """A user-facing error. The message is one line and names the file and field at fault."""

    exit_code = 2

    def __init__(self, message: str):
        from cotdistill.utils.redact import redact_text

        # one line, and never a credential (a URL's user info, a pasted key) in what the user's terminal shows
        super().__init__(redact_text(" ".join(str(message).split())))
