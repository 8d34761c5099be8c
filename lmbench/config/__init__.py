"""Reading a matrix: the TOML parser, the profiles it draws defaults from, the runs it expands to."""
