"""Errors a user can cause and fix.

The CLI prints a UserError on one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that names the fix."""

    exit_code = 1


class UsageError(UserError):
    """A malformed command line, flag value or preset (exit code 2, like click's own usage errors)."""

    exit_code = 2


class RunInterrupted(UserError):
    """The user stopped a run (Ctrl-C); the current image was saved (exit code 130, as shells expect)."""

    exit_code = 130
