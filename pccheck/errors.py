"""Errors a user can act on: printed as one line by the command-line tools, never as a traceback."""


class UserError(Exception):
    """Bad flags, missing paths, incompatible checkpoints: the user must change something."""


class CheckpointError(UserError):
    """A checkpoint could not be written or read; the message says what and what to do."""
