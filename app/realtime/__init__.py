"""A realtime session at the edge: one WebSocket connection and the parts that serve it."""
