"""prefsift scoring: model maths with torch + transformers only.

Pairs in, arrays out: tokenization with TRL parity, batched sequence log-probs, IRM,
LossDiff, exact IF/TIF by directional derivatives. No DuckDB, no Streamlit, no trl.
"""
