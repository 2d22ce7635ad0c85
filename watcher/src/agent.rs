//! OWNER H6: the agent loop wiring sources -> filters -> jails -> enforcer.
