"""Stages ``prune``, ``calibrate`` and ``quantize``: their options, results and reports
(the graph rewrites themselves are passes in ``lepton_compiler.passes``)."""
