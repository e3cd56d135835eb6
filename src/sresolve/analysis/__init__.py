"""Analysis tools of the SR papers, for every registered network family (``sresolve-analyze <tool>``).

* :mod:`sresolve.analysis.models` - turn a model spec (a model config name with overrides, or a weights file) into a
  network; shared by every tool.
* :mod:`sresolve.analysis.complexity` - parameters, Multi-Adds, activations, peak memory and latency.
* :mod:`sresolve.analysis.lam` - Local Attribution Maps and the Diffusion Index (Gu & Dong, CVPR 2021).
* :mod:`sresolve.analysis.cka` - centred kernel alignment between the features of models / scales.
"""
