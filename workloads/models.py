"""Workspaces, Jobs and Services (see DESIGN.md, Workloads)."""
