"""Hazmat layer: the standard library, numpy and ``cryptography`` only.

Each module states its threat model. Recipes live above this layer; use these functions directly
only if you know what you are doing.
"""
