"""Talking to the platform: connecting and logging in, credentials, commands and
queries, file transfers. The CLI and the agent use it; it imports nothing of the server."""
