"""secureagg.split."""
