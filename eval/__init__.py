"""Evaluation: score functions, the ``evaluate`` module, real chest radiograph loaders, studies and reports."""
