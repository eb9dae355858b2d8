"""The one exception type of this package."""


class BackboneError(RuntimeError):
    """A backbone cannot be built or used as requested; the message names the thing and what to do."""
