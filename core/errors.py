"""The few exception types the user sees; the CLI turns each into one line and exit status 2."""


class MLMarkError(Exception):
    """An error with a message meant for the user, not a traceback."""

    exit_status = 2


class ConfigError(MLMarkError):
    """A config file or a task in it is invalid."""


class TargetUnavailable(MLMarkError):
    """A target cannot run here (package missing, no GPU, library not built)."""


class UnsupportedTask(MLMarkError):
    """A target cannot run this combination of hardware, precision, batch or concurrency."""


class ModelError(MLMarkError):
    """A model file is missing, corrupt or does not match its workload."""


class DatasetError(MLMarkError):
    """A dataset is missing or malformed."""


class RunError(MLMarkError):
    """A target failed while loading a model or running a task."""
