"""The foundation every other package builds on: errors, safe file writing and locks, statistics,
typed tensor specs, validation of user input, logging and progress.

It imports nothing else of the project, so that workloads, targets and the harness can all use it
without depending on each other.
"""

__version__ = "0.1.0"
