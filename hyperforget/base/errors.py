"""One exception type per kind of user error; the CLI prints them without a traceback."""


class HyperForgetError(Exception):
    """Base class: a user-facing error whose message says what, where and how to fix."""


class ConfigError(HyperForgetError):
    """params.yaml (or a command-line option) is invalid."""


class DataError(HyperForgetError):
    """A data set is missing, corrupt, truncated or inconsistent with the request."""


class IntegrityError(HyperForgetError):
    """A stored artifact does not match its recorded checksum or layout."""


class GateFailed(HyperForgetError):
    """A model did not pass its forget/retain/MIA gates, so it may not be promoted or exported."""


class StorageError(HyperForgetError):
    """The object store (S3) or the tracking server cannot be reached or refused a request."""


class Diverged(HyperForgetError):
    """An unlearning method left non-finite weights (NaN or infinite): its options are too aggressive here."""
