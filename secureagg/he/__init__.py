"""secureagg.he."""
