"""Speed benchmarks of cifs_edu (issue 7): ``python -m benchmarks.run [--quick] [--only ...] [--json OUT]``.

Modules, one per benchmark:

- :mod:`benchmarks.steps` -- train step, attack step and the full PGD-10 adversarial-training
  step of the training engine (``cifs_edu.training.methods``) for vanilla, CAS and CIFS
  ResNet-18 at several widths, and the CAS/CIFS : vanilla ratios;
- :mod:`benchmarks.pgd` -- PGD-20 evaluation time of cifs_edu against torchattacks on the
  same model and data (and how far the fast path's adversarial examples agree);
- :mod:`benchmarks.relevance` -- Eq. 1 in closed form against autograd;
- :mod:`benchmarks.chapters` -- every book chapter under nbval (cold and warm cache) and the
  cold ``jupyter-book build book/`` (opt-in: slow);
- :mod:`benchmarks.agreement` -- robust accuracy of a model trained on the CIFAR-10 sample,
  attacked by torchattacks, by the exact and by the fast cifs_edu PGD (opt-in: slow);
- :mod:`benchmarks.gpu` (and ``benchmarks/gpu.sh``) -- the GPU throughput script.

Every number is a median over repeated runs after warm-up (min and max are kept too);
nothing here is asserted on time by the test suite.
"""
