"""A realtime session at the edge: one client connection (a WebSocket or a WebRTC peer) and the parts that serve
it."""
