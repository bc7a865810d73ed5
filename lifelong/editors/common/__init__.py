"""Pieces several editors share, each in one place:

    hooks.py       capture module inputs/outputs, stop a forward pass early, share the attention mask
    adapters.py    the side-module base class and its install/uninstall
    templates.py   context templates generated from the unedited model
    subjects.py    where the subject's last token sits in a prompt (MEMIT-style key positions)
    covariance.py  second moments of a module's inputs over a corpus, cached on disk (MEMIT's C, AlphaEdit's P);
                   stats folders: write_layer_stats / load_layer_stats
    mass_edit.py   MEMIT's turn with a pluggable per-layer solve, shared by MEMIT and AlphaEdit
    mass_vectors.py  MEMIT's keys and target values (compute_z)
    merging.py     TIES and the other shard merges (WISE)
"""
