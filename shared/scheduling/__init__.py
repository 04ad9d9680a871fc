"""Scheduling policies in the claim (docs/ARCHITECTURE.md#scheduling-policies): which of the
matching jobs a worker takes when strict order (highest priority, then oldest) is not the
only rule. `policies` holds the settings, `chooser` the rule (the specification that
shared/lua/include/choose.lua follows), `usage` the fair-share decay arithmetic."""
