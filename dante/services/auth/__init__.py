"""Identity: accounts, passwords and login tokens, and the auth callout through which
nats-server asks the platform who each connection is and what it may do."""
