"""Strategy parameters in plain words for the project setup form, with the paper's term in brackets.

The selection library's own help text (``Param.help``) is written for whoever reads the algorithm;
an admin setting up a project needs to know what a knob does to the queue.  Parameters missing here
keep the library's text.  ``(label, help, term)``: the term is what the papers and the library call it.
"""
from __future__ import annotations

PLAIN: dict[str, tuple[str, str, str]] = {
    # shared by most strategies
    "cold_start": ("First batches", "How to choose items before any label exists, and how to look for classes "
                   "nobody has labeled yet: spread over the data (k-means++), cover it evenly (k-center) or pick "
                   "typical items (TypiClust).", "cold start"),
    "unseen_share": ("Share spent finding new classes", "While some classes have no label yet, at most this share "
                     "of each batch goes to items unlike anything labeled; 0 turns it off.", "exploration share"),
    "unseen_rule": ("How much to explore", "good_turing: explore about as much as the labels suggest classes are "
                    "still missing; fixed: always the share above.", "Good-Turing missing mass"),
    # uncertainty sampling with randomness
    "score": ("Uncertainty measure", "How unsure the model must be about an item for it to be picked.",
              "acquisition score"),
    "beta": ("Focus", "0 picks at random; larger values pick more strictly the most uncertain items.",
             "temperature β"),
    # Cluster-Margin
    "eps": ("Cluster distance", "Items closer than this end up in the same group, so one batch does not take "
            "near-copies; leave empty to set the group size below instead.", "ε, HAC cut"),
    "target_cluster_size": ("Items per group", "Average size of the groups of similar items (empty: chosen from "
                            "the data and the batch size).", "cluster size"),
    "km_ratio": ("Candidates per slot", "How many uncertain items are considered for each place in the batch "
                 "before groups are spread out (empty: chosen from the pool).", "k_m / b"),
    "exact_max_n": ("Largest exact grouping", "Up to this many items are grouped exactly; more are grouped "
                    "approximately to save memory.", "exact HAC limit"),
    "n_coarse": ("Approximate groups", "Number of coarse groups used on large projects.", "k-means coarsening K"),
    "cluster_seed": ("Grouping seed", "Keeps the grouping the same from round to round.", "seed"),
    # BADGE
    "bias_feature": ("Use the bias", "Also use the model's per-class offset when comparing items.",
                     "intercept in the gradient embedding"),
    # TypiClust
    "max_clusters": ("Most groups", "Upper limit on the number of groups typical items are drawn from.",
                     "K cap"),
    "knn": ("Neighbours for typicality", "How many nearby items decide whether an item is typical.", "k-NN"),
    "min_cluster_size": ("Smallest group", "Groups smaller than this are used only when nothing else is left.",
                         "minimum cluster size"),
    # auto
    "switch_per_class": ("Switch after labels per class", "Pick typical items until there are this many labels "
                         "per class, then switch to the strategy below.", "TypiClust → uncertainty switch"),
    "then": ("Then use", "The strategy used once the switch point is reached.", "second-phase strategy"),
    "regime": ("When to pick typical items", "test: below the switch point, pick typical items only while a quick "
               "check on the labels so far shows they teach the model more than unusual ones; labels: always "
               "below the switch point.", "SelectAL-style regime test"),
    "otherwise": ("Else use", "Below the switch point, the strategy for a round where the check says typical "
                  "items do not teach more.", "strategy past the low-budget regime"),
    "test_from_per_class": ("Check from labels per class", "With fewer labels per class there is too little to "
                            "check, and typical items are picked.", "regime test start"),
    "cap_typiclust": ("Stop typical picks at the switch", "A large batch picks typical items only up to the switch "
                      "point and the rest with the 'else' strategy.", "TypiClust cap"),
    # FIRAL / Approx-FIRAL
    "lam": ("Regularisation", "How strongly the model's weights are held small; empty uses the model's own "
            "setting (recommended).", "λ of Σ_z"),
    "intercept": ("Per-class offset", "The model learns one offset per class (leave on).", "intercept"),
    "round_eta": ("Rounding step", "Step size of the final pick; empty chooses it from the problem size.",
                  "ROUND FTRL η"),
    "device": ("Processor", "cpu, cuda (GPU) or auto; empty uses the worker's setting.", "device"),
    "probes": ("Random probes", "More probes make each step more exact and slower.", "Hutchinson probes s"),
    "probe_resample": ("Fresh probes each step", "Draw new random probes every step (recommended).",
                       "probe resampling"),
    "estimator": ("Estimator", "factored is faster; two-sided is the paper's form.", "Hutchinson estimator"),
    "cg_rtol": ("Solver accuracy", "Smaller is more exact and slower.", "PCG relative tolerance"),
    "cg_maxiter": ("Solver steps", "Upper limit of inner solver steps.", "PCG max iterations"),
    "relax_iters": ("Optimisation steps", "More steps choose a better batch and take longer.",
                    "RELAX iterations"),
    "relax_tol": ("Stop early below", "Stop when a step improves the batch by less than this share; 0 runs all "
                  "steps.", "RELAX tolerance"),
    "step_rule": ("Step rule", "How the step size adapts during optimisation.", "mirror-descent step rule"),
    "step_size": ("Step size", "Size of each optimisation step.", "mirror-descent η"),
    "round_candidates": ("Candidates for the final pick", "Only this many of the most promising items are "
                         "considered at the end; 0 considers all.", "ROUND candidates"),
    "round_mass": ("Share of weight for the final pick", "Of those, only the fewest holding this share of the "
                   "relaxed weight are considered; 1 considers them all.", "ROUND mass"),
    "round_steps": ("Steps of the final pick", "Large batches pick several items per step, at most this "
                    "many steps; 0 picks one item per step.", "ROUND steps"),
    "dtype": ("Number precision", "float32 is faster; float64 more exact.", "dtype"),
    "memory_budget_mb": ("Memory limit (MB)", "Refuse to run when the exact method would need more memory.",
                         "dense working set"),
}


def plain_label(name: str) -> str:
    return PLAIN[name][0] if name in PLAIN else name.replace("_", " ")


def plain_help(name: str, fallback: str) -> str:
    """The plain explanation with the paper's term in brackets, or the library's text."""
    if name not in PLAIN:
        return fallback
    _, words, term = PLAIN[name]
    return f"{words} [{term}]"
