"""Errors a user can act on. The CLI prints these as one line, never as a traceback."""


class UserError(Exception):
    """Bad input from the user: a wrong path, a bad config key, a plan that does not fit."""
