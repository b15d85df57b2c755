"""secureagg.protocols.ckks."""
