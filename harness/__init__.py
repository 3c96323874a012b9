"""MLMark harness, the top layer: configuration, the run loop and its rules, results, reports, compare
and the command line. It drives workloads and targets; nothing below imports it."""
