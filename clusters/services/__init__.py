"""Every change to clusters: requests (lifecycle.py), the reconciler (reconcile.py), and
what node agents report (agents.py)."""
