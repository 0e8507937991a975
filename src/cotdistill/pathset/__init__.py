"""The path dataset's contract, read by both ``methods/`` and ``train/`` from below them.

- :mod:`cotdistill.pathset.roles`: what each path is (standard, perspective, teacher, rejected) and which paths
  each method trains on;
- :mod:`cotdistill.pathset.collate`: rows → the micro-step batch of :mod:`cotdistill.methods.base`;
- :mod:`cotdistill.pathset.dual`: EDIT's dual-CoT pairs and their key-token masks.

It depends only on ``data/`` (prompts) and ``utils/``; curation and the importers use the role constants.
"""
