"""Command-line front ends: ``gantry`` (operator CLI) and ``gantry-runtime`` (OCI runtime).

Each ``gantry`` subcommand lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``handler``; :mod:`gantry.cli.main` lists the modules.
"""
