"""Errors a user can cause (bad paths, configs, checkpoints): the CLI prints them without a traceback."""


class UserError(Exception):
    """A mistake in what the user asked for; the message says what was wrong and what would be right."""
