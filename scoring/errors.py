"""Errors raised by the scoring package. The CLI turns each into one clear line."""


class ScoringError(Exception):
    """Base class of every scoring error."""


class ModelLoadError(ScoringError):
    """A model or tokenizer could not be loaded (not found, no weights, bad adapter)."""


class TokenizationError(ScoringError):
    """A pair cannot be tokenized (e.g. conversational data without a chat template)."""
