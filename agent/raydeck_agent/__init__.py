"""raydeck-agent: runs on every node of a Raydeck cluster.

It registers the node with the control plane, starts Ray (head or worker) as its child,
heartbeats the node's state, usage and recent logs, and stops Ray when told to.
Standard library only; Ray is expected next to RAYDECK_PYTHON.
"""

__version__ = "0.1.0"
