"""emp-redis shared package: models, matcher, key schema, Lua scripts and the broker API."""

__version__ = "0.1.0"
