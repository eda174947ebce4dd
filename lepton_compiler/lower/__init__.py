"""Stages ``fuse`` → ``schedule`` → ``plan`` → ``codegen`` → ``package``: a Relax module to
scheduled TIR kernels, a static memory plan, one shared library and the artifact."""
