"""The command lines: the only place where the core (l2v_core) and the evaluation package (l2v_eval) meet."""
