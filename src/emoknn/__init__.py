"""emoknn: speech emotion recognition with supervised contrastive fine-tuning and kNN inference.

Implements Wang, Zhao & Qin, "Supervised Contrastive Learning with Nearest Neighbor Search for
Speech Emotion Recognition", Interspeech 2023, and goes past it. Modules, in data-flow order:
audio → corpora → folds → augment → model / losses → train → knn → metrics → experiments →
predict / serve / export.
"""

__version__ = "0.1.0"
