"""The active classifier's class probabilities for any set of sources (API pages and exports)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from rgzlabel.learning.classifiers import class_probabilities
from rgzlabel.learning.models import ClassifierVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictions:
    """Probabilities of one classifier; ``by_source`` holds only the sources it has embeddings for."""

    classifier: ClassifierVersion
    classes: list[str]
    by_source: dict[int, np.ndarray] = field(default_factory=dict)

    def label_of(self, source_id: int) -> str:
        """The most probable class, or "" when there is no prediction for the source."""
        probabilities = self.by_source.get(source_id)
        return "" if probabilities is None else self.classes[int(probabilities.argmax())]

    def as_dict(self, source_id: int) -> dict[str, Any] | None:
        """The prediction as JSON-ready data, or None when there is none for the source."""
        probabilities = self.by_source.get(source_id)
        if probabilities is None:
            return None
        return {
            "classifier": self.classifier.pk,
            "label": self.label_of(source_id),
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probabilities, strict=True)},
        }


def active_classifier() -> ClassifierVersion | None:
    """The promoted classifier, with its embedding set, or None before the first retrain."""
    return ClassifierVersion.objects.filter(is_active=True).select_related("embedding_set").first()


@lru_cache(maxsize=2)
def _load(classifier_path: str, embeddings_path: str, stamp: tuple[int, int]) -> tuple[dict[str, Any], Any]:
    """(classifier bundle, memory-mapped embeddings); ``stamp`` (file mtimes) keys the cache."""
    from ml.embedding_store import read_embeddings
    from rgzlabel.learning.classifiers import load_classifier

    return load_classifier(ClassifierVersion(path=classifier_path)), read_embeddings(embeddings_path)


def predict_sources(source_ids: Sequence[int], classifier: ClassifierVersion | None = None) -> Predictions | None:
    """Class probabilities of ``classifier`` (the active one by default) for ``source_ids``.

    Returns None when there is no classifier or its files are gone (the API then shows no
    prediction rather than failing). Sources missing from its embedding set are left out.
    """
    classifier = classifier or active_classifier()
    if classifier is None:
        return None
    embeddings_path = classifier.embedding_set.path
    try:
        # The mtimes let the cache notice a file rewritten at the same path.
        stamp = (os.stat(classifier.path).st_mtime_ns, os.stat(embeddings_path).st_mtime_ns)
        bundle, stored = _load(classifier.path, embeddings_path, stamp)
    except OSError as exc:
        logger.warning("classifier %s cannot be loaded: %s", classifier.pk, exc)
        return None
    classes = list(bundle["classes"])
    ids = np.asarray(source_ids, dtype=np.int64)
    known = ids[np.isin(ids, stored.source_ids)]
    if len(known) == 0:
        return Predictions(classifier, classes)
    probabilities = class_probabilities(bundle, stored.vectors(known))
    return Predictions(classifier, classes, dict(zip(known.tolist(), probabilities, strict=True)))
