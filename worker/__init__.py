"""emp-redis worker package."""
