"""The Clusters sidebar, its jupyter-server extension and the notebook widget."""
