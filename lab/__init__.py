"""The lab: where artgen's bundled tiny models come from and how well they work.

Design: the product (``artgen``) never imports this package, and setup.cfg does not install it. It holds the
synthetic world the tiny models are trained on (``scenes``), the CLIP-free judge that reads colour and shape
back from pixels (``shape_checker``), the training scripts (``training``) and the end-to-end measurement
(``zoo_report``). Run its scripts as modules from the repository root (``python -m lab.zoo_report``), which
puts the root on the import path; the tests get it from setup.cfg's pytest ``pythonpath``. See lab/README.md.
"""
