"""The empirical privacy audit: canaries through a real federated DP-SGD run (issue 14)."""
