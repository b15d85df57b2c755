"""secureagg.fl."""
