"""One module per command group; each parses options, calls the library and prints."""
