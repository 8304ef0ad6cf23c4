"""FIRAL and Approx-FIRAL batch selection for multinomial logistic regression.

References
----------
[FIRAL]  Y. Chen and G. Biros, "FIRAL: An Active Learning Algorithm for Multinomial
         Logistic Regression", NeurIPS 2023.
[AFIRAL] Y. Chen, Z. Wen and G. Biros, "A Scalable Algorithm for Active Learning",
         arXiv 2409.07392, 2024.
[AZ17]   Z. Allen-Zhu, Y. Li, A. Singh and Y. Wang, "Near-optimal design of experiments via
         regret minimization", ICML 2017.

Modules
-------
problem   : the inputs as one :class:`FisherProblem` (features with the intercept column,
            the c-1 reference-class probabilities, labeled rows first).
kron      : Kronecker-structured, matrix-free Fisher products and per-point quadratic forms.
pcg       : preconditioned conjugate gradients over a batch of right-hand sides.
hutchinson: Rademacher trace / gradient estimators.
relax     : entropic mirror descent on {z >= 0, sum z = b} (RELAX).
round     : FTRL with the l1/2 regulariser (ROUND), dense and block-diagonal, and the
            nu_t solve.
exact     : dense FIRAL (small problems; refuses beyond a memory budget).
approx    : Approx-FIRAL (never forms a (c-1)d x (c-1)d matrix).
bench     : ``python -m selection bench firal`` (time / memory tables).
"""
from __future__ import annotations

from .approx import approx_firal  # noqa: F401
from .exact import ProblemTooLarge, exact_firal, exact_bytes_estimate  # noqa: F401
from .problem import FisherProblem, make_problem  # noqa: F401
