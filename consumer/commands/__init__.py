"""One module per command; each exposes ``register(subparsers)``.

Modules whose name starts with an underscore are helpers, not commands.

A command sets ``handler`` with ``set_defaults``: a function that takes the
parsed arguments and returns the exit code.
"""
