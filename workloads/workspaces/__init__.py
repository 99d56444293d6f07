"""Workspaces: a persistent development environment on a cluster."""
