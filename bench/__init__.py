"""buildstate's benchmark suite: ratios to ceilings measured in the same run (``python -m bench --help``).

A 2-core machine shared with other work gives noisy absolute numbers, so every scenario is reported next to
the ceiling that bounds it, measured minutes apart on the same machine: the bare framework serving a trivial
route, and the store's own transaction run straight from Python. See docs/performance.md.
"""
