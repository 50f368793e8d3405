"""The scale machinery: how the library runs fast and safely, apart from what it computes.

Nothing here changes a result beyond float rounding (each module's tests say how it is checked);
switch any of it off and the plain computation of :mod:`cifs_edu.attacks` and
:mod:`cifs_edu.training` runs instead. Each path is named where it is switched on:

- :mod:`.fast`: the BN-folded, channels_last, frozen private copy an attack differentiates.
  On by ``Attack(fold_bn=..., channels_last=...)`` (eval-mode attacks) and
  ``TrainConfig(fast_attack=...)`` (training attacks on the CPU).
- :mod:`.graphs`: the ``pgd_at`` training attack replayed from a CUDA graph,
  ``TrainConfig(cuda_graphs=True)`` (CUDA only).
- :mod:`.distributed`: DistributedDataParallel under ``torchrun`` (``python -m cifs_edu train``).
- :mod:`.runlock`: a file lock per run folder, so two processes never train or evaluate the
  same run at once (held by ``train``, ``evaluate_run`` and the zoo).
- :mod:`.runs`, :mod:`.checkpoint`, :mod:`.rundir`: the run folder a training run keeps its books in
  (``last.pt`` for exact resume, ``best.pt``, history, results), ``load_model``, ``evaluate_run`` and
  its result cache (reused only for the weights it was computed on); atomic writes, digests.
- :mod:`.prepare`: trains every model of the book ahead of its chapters, ``jobs`` processes at a
  time (``python -m cifs_edu prepare``, ``make models``, the book build); the weights are those
  :func:`cifs_edu.zoo.load` would train.

Import the submodules directly (``from cifs_edu.engine.fast import fast_copy``); this
``__init__`` imports none of them.
"""
