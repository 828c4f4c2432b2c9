"""Command-line entry points: ``gnnreco train|evaluate|infer|generate|export|bench``.

Each verb is a Hydra application with its own primary config in ``conf/<verb>.yaml``; the work is done
by a plain function ``run_<verb>(cfg)`` that tests call with configs composed through Hydra's compose
API.
"""
