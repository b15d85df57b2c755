"""secureagg.protocols.paillier."""
