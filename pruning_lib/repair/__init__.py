"""Repair after pruning, without the training set (ModHiFi-P, Kashyap et al., NeurIPS 2025):
the singleton fidelity criterion ``hifi`` (:mod:`.fidelity`, eq. 3 and Algorithms 1-2), compensation
of the readers of removed channels (:mod:`.compensation`, Proposition 3.8 and the least-squares
refit), calibration images synthesised from the network's BatchNorm statistics (:mod:`.synthesis`),
and one call that prunes to a target and repairs each step (:mod:`.pipeline`). The streaming
moments both are made of live in :mod:`.moments`; :mod:`.inputs` reads unlabelled batches."""
from .compensation import (CompensationResult, LayerCompensation, compensate, delta_closed_form, delta_star,
                           least_squares_refit, reconstruction_error)
from .fidelity import HiFiScores, ReaderFidelity, fidelity_statistics, hifi_removals, hifi_scores
from .inputs import RepairDataError, iter_inputs
from .moments import PatchMoments, UnsupportedReaderError
from .pipeline import REPAIRS, RepairResult, prune_and_repair, repair_pruned
from .synthesis import (SynthesisCacheError, SyntheticImages, bn_statistics_loss, model_fingerprint,
                        synthesize_images)

__all__ = ["hifi_scores", "fidelity_statistics", "hifi_removals", "HiFiScores", "ReaderFidelity",
           "compensate", "delta_star", "delta_closed_form", "least_squares_refit", "reconstruction_error",
           "CompensationResult", "LayerCompensation", "synthesize_images", "bn_statistics_loss", "model_fingerprint",
           "SyntheticImages", "SynthesisCacheError", "prune_and_repair", "repair_pruned", "RepairResult", "REPAIRS",
           "PatchMoments", "UnsupportedReaderError", "iter_inputs", "RepairDataError"]
