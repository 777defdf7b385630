"""The zoo's errors: one :class:`ZooError` (a user error) for everything that
stops a zoo model from being used, subclassed by what went wrong."""

from mmf_rec.errors import UserError


class ZooError(UserError, RuntimeError):
    """A zoo model cannot be used; the message says why."""


class ZooKeyError(ZooError):
    """A key that is malformed, has no entry, or is not the kind asked for."""


class ZooFileError(ZooError):
    """A file the entry names is missing or unreadable."""


class ZooChecksumError(ZooError):
    """A file whose sha256 is not the one its entry records."""


class ZooMismatchError(ZooError):
    """The zoo model was trained on other data, or for another model."""
