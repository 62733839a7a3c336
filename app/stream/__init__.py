"""WebRTC sessions: the per-session frame pump, annotation, stats and ICE settings (DESIGN 1, 4.3)."""
