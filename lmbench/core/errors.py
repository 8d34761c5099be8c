"""The project's own errors: each carries a one-line message naming what is wrong and where."""


class LmbenchError(Exception):
    """Base of every error lmbench reports to the user as one line."""


class MatrixError(LmbenchError):
    """A matrix file that cannot be run: syntax, unknown key or plugin, wrong type."""


class PluginError(LmbenchError):
    """A plugin that is unknown, failed to import, or broke its contract."""


class DataError(LmbenchError):
    """A dataset file that is missing or malformed."""


class CorruptFile(LmbenchError):
    """A file lmbench cannot use as it stands: truncated, garbled, failing its checksum, or not
    in the format lmbench writes (a pickle, say, which is never read)."""


class UnsafePath(LmbenchError):
    """A path lmbench will not write through: a symbolic link planted where it keeps a file."""


class Stopped(LmbenchError):
    """A command stopped by a signal (Ctrl-C, SIGTERM), after saying what it kept; it exits
    with the shell's code for that signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class SkipRun(LmbenchError):
    """Raised by a plugin when a run cannot be done here (e.g. weights not available offline).

    The run is recorded as skipped with this message, and the matrix goes on.
    """


def one_line(exc: BaseException) -> str:
    """An error as one line: lmbench's own message, or any other's type and message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, LmbenchError) else f"{type(exc).__name__}: {text}"
