"""MLMark harness: configuration, run loop, statistics, scoring and reporting."""

__version__ = "0.1.0"
