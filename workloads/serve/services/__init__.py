"""Services' writers: deploy.py (what people ask: deploy, traffic, rollback, tokens,
terminate) and rollout.py (what the orchestrator does about it)."""
