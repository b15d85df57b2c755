"""secureagg.dp."""
