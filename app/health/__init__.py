"""The live health channel: one hub per server, one channel per WebSocket subscriber (DESIGN 4.2)."""
