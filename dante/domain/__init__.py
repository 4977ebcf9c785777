"""The marketplace's rules, pure: the world folded from events, the deciders of
commands, pricing, placement and the market index. No IO here: no NATS, no SQLite, no
clock but the one passed in."""
