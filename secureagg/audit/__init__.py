"""secureagg.audit."""
