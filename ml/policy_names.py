"""Names the web pages need without importing the policies (scikit-learn and modAL: ~2 s)."""

#: The policy to use while no classifier can be fitted (no labels, or one class only): an
#: embedding-only policy of ml.policies.
COLD_START_POLICY = "typical_clusters"
