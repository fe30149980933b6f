"""The one exception type for user mistakes: bad paths, bad files, bad options.

The CLI prints its message as a single line and exits with code 2; anything else is a bug and keeps its traceback.
"""


class FrankenError(Exception):
    """A problem with the user's input (file, option, prompt), reported as one clear line."""
