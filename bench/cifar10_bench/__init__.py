"""The CIFAR-10 benchmark harness behind bench/run_cifar10.py (settings, costs, artifacts, report)."""
