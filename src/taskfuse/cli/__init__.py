"""The taskfuse command line; every command is a call into the public API."""
