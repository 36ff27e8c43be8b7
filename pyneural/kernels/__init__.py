"""Argument-checked entry points to the compute kernels.

One module per kernel family. Each function takes numpy arrays, validates them (raising a
``TypeError``/``ValueError`` that names the argument and the shapes), then runs the C++ kernel
from ``pyneural._C`` for float32, or a plain numpy path for float64 (the gradient-check and
reference path). Nothing above this package calls ``_C`` directly.
"""
