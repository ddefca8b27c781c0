"""The `spine-nav` command line (see :mod:`spine_nav.cli.main`)."""
