"""dialer core: settings, models, the Ultravox client, trunk limiters, Redis keys and metrics.

Nothing in this package imports ``campaigns`` or ``workers``: they build on it, never the reverse.
"""

__version__ = '0.1.0'
