"""emp-redis shared package."""
