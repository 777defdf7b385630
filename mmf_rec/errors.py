"""Errors in what the user gave (files, config), and how a command reports them.

A run that stops because of its input should say what is wrong in one line:
a traceback through MMF's trainer buries the message and says nothing it
does not. ``MMF_REC_DEBUG=1`` shows the traceback anyway.
"""

import functools
import os
import sys

DEBUG_ENV = "MMF_REC_DEBUG"


class UserError(Exception):
    """Bad input or config; the message says what and where, in one line."""


def one_line_user_errors(main):
    """``main`` that ends with ``<program>: error: <message>`` and exit status 2
    on a :class:`UserError` (unless ``$MMF_REC_DEBUG`` is set)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            if os.environ.get(DEBUG_ENV):
                raise
            message = " ".join(str(error).split("\n"))
            prog = os.path.basename(sys.argv[0]) or "mmf_rec"
            print(f"{prog}: error: {message} (set {DEBUG_ENV}=1 for the traceback)",
                  file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
