"""`make demo`: the rds-csi node plugin end to end on one machine, without a cluster.

The real daemon (loop connector) is driven over its CSI socket the way kubelet would, against a
Kubernetes API-server emulator that receives the events it posts.  Needs root (loop devices,
mounts); see demo.main.
"""
