"""The implementations of the ``fcam`` sub-commands, one module each (not a public API).

Each module has ``register(subparsers)``, which adds its parser, and ``run(args)``, which
executes it and returns the exit status: :mod:`~fcam.commands.demo`,
:mod:`~fcam.commands.evaluate`, :mod:`~fcam.commands.explain`, :mod:`~fcam.commands.fit`,
:mod:`~fcam.commands.export` and :mod:`~fcam.commands.app`. :mod:`~fcam.commands.common`
holds the user-error type, argument types and atomic writers; :mod:`~fcam.commands.sources`
builds classifiers, map producers and datasets from the options.
"""
