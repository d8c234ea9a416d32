"""The one exception type users see.

Every error caused by the user's input (a file, a config value, a missing dataset) is raised as
:class:`TCMNError` with one sentence that names the file and the fix. The command-line entry
points catch it, print the sentence and exit with status 2, never a traceback.
"""

from __future__ import annotations


class TCMNError(Exception):
    """A user-facing error: its message is one sentence naming the file and the fix."""
