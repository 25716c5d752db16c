"""Circuit breaking: the stage; one circuit and its single trial (``guarded.py``); every
circuit of the process and their sync across replicas (``board.py``).

May import: what ``stages`` may.
"""
