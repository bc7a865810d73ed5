"""What every other part of the suite stands on: configuration, errors, atomic I/O, paths, the edit record
and the tensor-tree state format. Nothing here imports torch models, datasets or editors."""
