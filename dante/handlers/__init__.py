"""The command service and the handlers that run the market."""
