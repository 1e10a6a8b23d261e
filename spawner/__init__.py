"""JupyterHub spawners that give each user a *space*: their notebook plus their engines.

``clusterhub.spawner.local`` runs a space as local processes on one machine.
"""
