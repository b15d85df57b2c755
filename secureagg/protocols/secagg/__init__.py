"""secureagg.protocols.secagg."""
