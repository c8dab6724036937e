"""Library code shared by the benchmark entry scripts: the user programs (``programs``), the
hand-written Numba adjoints (``adjoints``), the peers (``peers_*``), finite-difference checks
(``checks``), the build/check/time/report harness (``harness``) and thread pinning
(``_threads``). Nothing here is run as a script."""
