"""WebRTC calls: a realtime session over a peer connection, as OpenAI's WebRTC clients expect it."""
