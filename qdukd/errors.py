"""User-facing errors: one line that names the problem and the fix."""


class QdukdError(Exception):
    """Bad input (missing file, wrong scale, mismatched checkpoint, ...).

    CLIs print ``error: <message>`` and exit with code 2; library callers can catch it.
    """


class NonFiniteOutput(QdukdError):
    """A model produced NaN or infinity: its weights are broken (the parity gate fails on it)."""


class RunFolderBusy(QdukdError):
    """Another live process holds the run folder's lock (callers that share a grid of runs skip it)."""
