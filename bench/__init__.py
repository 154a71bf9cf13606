"""scriba vs kraken 7.1.1 benchmark (``python3 bench/run.py``): settings, harness, sections and report.

Runs under any Python 3.11 without scriba's dependencies: torch work (the matmul peak, FLOP counts, reading
.arrow files) goes to a subprocess of a tool's venv python.
"""
