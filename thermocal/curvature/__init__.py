"""The Hessian as a matrix-free operator and the estimators run on it (method.md §2): torch math,
no disk I/O, no printing."""
