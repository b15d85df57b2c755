"""secureagg.protocols."""
