"""The pipeline's own errors: input it cannot use, with a message naming the file and the problem.

The CLI prints a `PipelineError` as one `error: ...` line and exits with 2; any other exception is
a bug and keeps its traceback (`--debug` shows it for these too). Each class also derives from the
built-in error it refines, so `except ValueError` and the like keep working.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Input the pipeline cannot use: a bad file, config value or missing earlier output."""


class InputError(PipelineError, ValueError):
    """A file or value that cannot be used as given."""


class MissingInputError(PipelineError, FileNotFoundError):
    """A file that the user or an earlier stage should have written is not there."""


class ConfigError(PipelineError, ValueError):
    """A configuration file that cannot be used; the message names the file, key and value."""


class DiskFullError(PipelineError, OSError):
    """A write that ran out of room: the disk or the quota is full, or the file reached the process's
    file-size limit (`ulimit -f`). Raised by `pipeline.io.atomic` for every atomic writer, so the
    message names the output file (not its temp) and the previous version of that file is kept."""
