"""Real NumPy programs, written as people publish them for autograd/JAX, that srcgrad
differentiates unchanged (issue 15's acceptance gallery; checked by tests/test_real_programs.py).
Sizes are tiny so that finite differences and compiles stay cheap."""
