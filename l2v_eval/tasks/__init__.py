"""What l2v-eval runs: the suites (one record each, ``suites.py``), ``--tasks`` specs (``presets.py``), the two
task kinds (``kinds.py``), the paper's instructions, local task data and the bundled suites (``real/``, ``mini/``)."""
