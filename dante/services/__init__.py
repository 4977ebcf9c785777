"""What the platform serves over NATS: the command service and its queries, job files
and output, identity (accounts, logins, the auth callout), the agents' consumers."""
