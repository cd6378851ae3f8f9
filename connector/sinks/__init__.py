"""Where ingested contacts and events go."""
