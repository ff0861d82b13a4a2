"""mmfs: a multimodal CTR feature store. One import namespace, ``mmfs``; each subpackage is a
floor of the house, and imports run one way, down this list (``tests/test_imports.py`` holds them
to it):

- ``mmfs.cli``: the ``mmfs`` command, which composes everything below;
- ``mmfs.checks``: the agreement checks (offline/online parity, served-feature consistency);
- ``mmfs.serving`` (the scorer and its HTTP app) and ``mmfs.streaming`` (``mmfs stream``);
- ``mmfs.online``: the online store's reads, for the scorer and the stream alike;
- ``mmfs.store``: the Feast side (the repo, apply, the schema check, materialise, training sets);
- ``mmfs.model``: the models, the loader, training and checkpoints;
- ``mmfs.pipelines``: the Spark jobs and their plumbing, the encoders;
- ``mmfs.core``: the ground floor every layer shares: contracts, feature rules, event rules.

In a source checkout the subpackages are the repository's top-level folders (``core/``,
``pipelines/``, ``model/``, ...), mapped into the namespace by ``pyproject.toml``; the Feast
declarations ship inside the package as ``mmfs/feature_repo`` (``mmfs init`` copies them out).
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("mmfs")
except PackageNotFoundError:  # imported from a tree that was never installed
    __version__ = "0+unknown"
