"""The benchmark suite behind ``python benchmarks/suite.py``; benchmarks/README.md says what it measures.

Modules, imports pointing down the list only: ``procfs`` (process trees, memory, /dev/shm), ``scenarios`` (what
is measured), ``perf_analyzer`` and ``httpload`` (the two load generators), ``systems`` (what is started, and
how), ``launch`` (starting and stopping one system), ``report`` (medians, ratios, the table),
``runner`` (the repetitions), ``cli`` (the command line, the results files). ``pybind_server``, ``pytriton_server`` and
``litserve_server`` are the servers themselves, each run as a script in a process of its own.
"""
