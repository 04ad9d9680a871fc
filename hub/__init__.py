"""emp-redis hub package."""
