"""Programs built on the library: what a terminal runs, not what a reader reads.

- :mod:`.cli`: ``python -m cifs_edu {train, eval, reproduce, prepare, reference, list}`` (and the
  ``cifs-edu`` script); its ``train`` options are generated from
  :class:`~cifs_edu.training.TrainConfig`'s fields.
- :mod:`.reproduce`: a paper table run end to end (train each row once, evaluate, compare with the
  paper's numbers, save the JSON).
- :mod:`.reference_run`: the reference runs on real CIFAR-10 (train vanilla and CIFS with one recipe,
  evaluate them in stages, write the JSON that :mod:`cifs_edu.reference` reads).

Neither the teaching core nor the book's chapters import this package (``tests/test_structure.py``
checks it); the chapters show the commands and run them in a subprocess.
"""
