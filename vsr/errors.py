"""Errors the library raises for bad input; the CLI prints one line and exits with code 1."""


class VsrError(Exception):
    """A user-facing error: the message names the file, what is wrong and what to do."""


class InputError(VsrError):
    """The input is missing, not media, has no video stream, has no frames, or is corrupt."""


class OutputError(VsrError):
    """The output cannot be written (exists, not writable, same as input, unsupported format)."""


class WeightsError(VsrError):
    """A weights file or name is unknown, corrupt, or does not match the architecture."""


class DataError(VsrError):
    """Training or benchmark data is missing or unusable."""
