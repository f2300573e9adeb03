"""Evaluation: the three benchmarks of the paper (``r1reward eval`` / ``eval-metrics``) and a Python API
for trained models (``RewardModel``; ``r1reward score``). See README.md in this folder."""
