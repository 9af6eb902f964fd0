"""One module per command; each exposes ``register(subparsers)``.

A command sets ``handler`` with ``set_defaults``: a function that takes the
parsed arguments and returns the exit code.
"""
