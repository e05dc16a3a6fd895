"""Campaign domain: CSV loading, calling-hours and retry policy, do-not-call, lifecycle, results."""
