"""``clusterhub build``: an environment for notebooks and engines from a Binder-style
repository (requirements.txt, environment.yml, apt.txt, postBuild, start, binder/).

- :mod:`.source`: the repository, from a directory or a Git URL at a ref;
- :mod:`.spec`, :mod:`.conda`: what it asks for, read as repo2docker reads it;
- :mod:`.local`, :mod:`.runner`: local mode, a versioned environment under the data dir;
- :mod:`.environments`: which environment is current, and which one a space uses;
- :mod:`.image`: Kubernetes mode, the notebook and cluster images with one tag.
"""
