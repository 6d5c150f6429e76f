"""connect-bulk: an async batch pipeline for bulk Amazon Connect jobs.

``pipeline`` is the job-agnostic engine and the command line; ``pipeline.sandbox`` is the local
Amazon Connect sandbox the tests and the demo run against.
"""

__version__ = "0.1.0"
