"""Experiments on live traffic: feedback on answers, and adaptive A/B between deployments."""
