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


# Longest echo of a user's value in an error line: enough to recognise it, never a screenful.
_SHOWN_CHARS = 60


def _cut(text: str, size: int, unit: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else "{}... ({} {})".format(text[:_SHOWN_CHARS], size, unit)


def shown(value: object) -> str:
    """A user's value as an error line echoes it: as JSON, control and invisible characters escaped (a
    zero-width space cannot make 'mobilenet' look allowed), cut to a few dozen characters."""
    import json

    if getattr(value, "number_text", False):  # a number kept as its digits (too long to convert)
        return _cut(str(value), len(value), "digits")  # type: ignore[arg-type]
    try:
        text = json.dumps(value, ensure_ascii=True)  # escapes every non-ASCII and control character
    except (TypeError, ValueError):
        text = ascii(value)
    if isinstance(value, str):
        return _cut(text, len(value), "characters")
    return _cut(text, len(text), "digits" if isinstance(value, int) else "characters")


def clean(text: str) -> str:
    """A user's text for an error line that quotes it itself: escaped as shown() escapes it, cut, unquoted."""
    import json

    return _cut(json.dumps(str(text), ensure_ascii=True)[1:-1], len(str(text)), "characters")
