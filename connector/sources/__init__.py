"""Where files come from: one adapter per URL scheme behind the Source protocol."""
