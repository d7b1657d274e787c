"""torch models, training loops and evaluation (filled in by later issues).

Imports flow one way: ``cli`` -> ``models`` -> ``catalog``.
"""
