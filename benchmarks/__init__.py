"""srcgrad's benchmark suite (see README.md here): entry scripts in this folder, shared library
code (programs, hand adjoints, peers, harness) in :mod:`benchmarks.lib`."""
