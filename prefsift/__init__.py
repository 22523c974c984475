"""prefsift: find the preference pairs that actually help your model.

The application layer: CLI, configuration, data loading and validation, the pipeline
(warm-up -> validation model -> score -> select -> export -> train) and background jobs.
The only package that imports trl.
"""

__version__ = "0.1.0"
