"""Label and model quality on arrays: accuracy estimates, agreement, annotator models, label errors.

Pure NumPy/SciPy (the default out-of-fold fit uses :mod:`selection.head`); no Django.
See docs/quality.md.
"""
from __future__ import annotations

from .agreement import (  # noqa: F401
    MISSING,
    cohen_kappa,
    confusion_vs_reference,
    fleiss_kappa,
    item_counts,
    krippendorff_alpha,
    pairwise_cohen_kappa,
)
from .annotators import DawidSkeneResult, dawid_skene, majority_vote  # noqa: F401
from .errors import (  # noqa: F401
    confident_learning,
    label_error_scores,
    learnability,
    out_of_fold_proba,
)
from .estimators import (  # noqa: F401
    AccuracyEstimate,
    StratumEstimate,
    active_inference_stratum,
    active_testing_accuracy,
    active_testing_proposal,
    adaptive_audit_rate,
    apply_confidence_calibration,
    audit_accuracy,
    combine_strata,
    difference_accuracy,
    fit_confidence_calibration,
    inclusion_probabilities,
    ppi_accuracy,
)
