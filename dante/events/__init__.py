"""The event log on JetStream: streams, appends, loads and replays."""
