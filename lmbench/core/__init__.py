"""The ground floor: the plugin interfaces, their hooks and registry, typed params, keys and
errors. It imports nothing else of lmbench."""
