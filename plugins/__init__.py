"""The built-in plugins, each registered through the ``lmbench`` entry-point group."""
