"""Transfer learning on top of a pretrained backbone: transferability scores (LogME, LogME-PED),
fine-tuning (LP-FT / FT) and the feature-alignment rule of ASVP (arXiv 2403.01101).

The scores are pure array functions (NumPy or CuPy, from their inputs); fine-tuning needs torch and is
imported lazily by its own module (``selection.transfer.finetune``).
"""
from .logme import logme, logme_evidence, logme_target
from .ped import PedResult, logme_ped, ped_motion, ped_transform

__all__ = ["logme", "logme_evidence", "logme_target", "logme_ped", "ped_motion", "ped_transform", "PedResult"]
