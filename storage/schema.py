"""The schema as an ordered, append-only list of migrations.

Never edit a released migration: append a new one. Each is applied in one transaction
together with its row in `schema_migrations`.
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
CREATE TABLE datasets (
    name        VARCHAR PRIMARY KEY,
    source      VARCHAR,
    format      VARCHAR,          -- standard | conversational (as stored)
    created_at  TIMESTAMP DEFAULT current_timestamp,
    config      JSON
);
-- One row per preference pair. prompt/chosen/rejected hold plain text for kind='standard'
-- and a JSON list of {role, content} messages for kind='conversational'.
CREATE TABLE pairs (
    dataset     VARCHAR NOT NULL,
    pair_id     VARCHAR NOT NULL,  -- content hash: re-ingesting adds nothing
    row_idx     BIGINT,            -- row number in the first source it came from
    split       VARCHAR NOT NULL DEFAULT 'train',  -- train | val | eval
    kind        VARCHAR NOT NULL,  -- standard | conversational
    prompt      VARCHAR NOT NULL,
    chosen      VARCHAR NOT NULL,
    rejected    VARCHAR NOT NULL,
    noise       BOOLEAN,           -- known label noise (swapped pair), when the data says so
    meta        JSON,
    PRIMARY KEY (dataset, pair_id)
);
CREATE TABLE quarantine (
    dataset     VARCHAR NOT NULL,
    source      VARCHAR,
    row_idx     BIGINT,
    field       VARCHAR,
    reason      VARCHAR NOT NULL,
    detail      VARCHAR,
    raw         VARCHAR,           -- the offending row, truncated
    created_at  TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE models (
    model_id     VARCHAR PRIMARY KEY,  -- fingerprint
    name         VARCHAR,              -- short user-facing name (ref, theta, theta_val, ...)
    path         VARCHAR NOT NULL,     -- hub id or local path
    revision     VARCHAR,
    adapter_path VARCHAR,
    weights_hash VARCHAR,
    role         VARCHAR,              -- reference | policy | validation | trained | other
    lineage      JSON,
    created_at   TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE logp_runs (
    run_id      VARCHAR PRIMARY KEY,   -- hash(model fingerprint, dataset content, tokenization)
    model_id    VARCHAR NOT NULL,
    dataset     VARCHAR NOT NULL,
    config      JSON,
    n_pairs     BIGINT,
    status      VARCHAR NOT NULL DEFAULT 'done',
    created_at  TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE logps (
    run_id          VARCHAR NOT NULL,
    pair_id         VARCHAR NOT NULL,
    chosen_logp     DOUBLE,
    rejected_logp   DOUBLE,
    prompt_tokens   INTEGER,
    chosen_tokens   INTEGER,
    rejected_tokens INTEGER,
    truncated       BOOLEAN,
    PRIMARY KEY (run_id, pair_id)
);
CREATE TABLE score_runs (
    run_id      VARCHAR PRIMARY KEY,
    dataset     VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,      -- irm | lossdiff | if | tif | ...
    config      JSON,                  -- beta, input runs, models, method ...
    n_pairs     BIGINT,
    created_at  TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE scores (
    run_id   VARCHAR NOT NULL,
    pair_id  VARCHAR NOT NULL,
    value    DOUBLE,
    PRIMARY KEY (run_id, pair_id)
);
CREATE TABLE diagnostics (
    run_id   VARCHAR NOT NULL,
    name     VARCHAR NOT NULL,
    value    DOUBLE,
    detail   JSON,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE selections (
    name        VARCHAR PRIMARY KEY,
    dataset     VARCHAR NOT NULL,
    rule        JSON NOT NULL,
    resolved    JSON,                  -- thresholds the rule resolved to
    score_runs  JSON,
    n_kept      BIGINT,
    n_total     BIGINT,
    created_at  TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE selection_members (
    selection  VARCHAR NOT NULL,
    pair_id    VARCHAR NOT NULL,
    PRIMARY KEY (selection, pair_id)
);
CREATE TABLE exports (
    export_id   VARCHAR PRIMARY KEY,
    selection   VARCHAR,
    path        VARCHAR NOT NULL,
    format      VARCHAR NOT NULL,
    n_rows      BIGINT,
    sha256      VARCHAR,
    manifest    JSON,
    created_at  TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE jobs (
    job_id      VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,
    argv        JSON,
    status      VARCHAR NOT NULL,      -- queued | running | done | failed | killed
    pid         INTEGER,
    log_path    VARCHAR,
    status_path VARCHAR,
    error       VARCHAR,
    created_at  TIMESTAMP DEFAULT current_timestamp,
    finished_at TIMESTAMP
);
CREATE TABLE training_runs (
    run_id       VARCHAR PRIMARY KEY,
    kind         VARCHAR NOT NULL,     -- warmup | fit-val | train
    dataset      VARCHAR,
    selection    VARCHAR,
    base_model   VARCHAR,
    output_model VARCHAR,
    output_dir   VARCHAR,
    config       JSON,
    status       VARCHAR NOT NULL,
    created_at   TIMESTAMP DEFAULT current_timestamp,
    finished_at  TIMESTAMP
);
CREATE TABLE training_metrics (
    run_id  VARCHAR NOT NULL,
    step    INTEGER NOT NULL,
    name    VARCHAR NOT NULL,
    value   DOUBLE,
    PRIMARY KEY (run_id, step, name)
);
CREATE TABLE evaluations (
    model_id         VARCHAR NOT NULL,
    dataset          VARCHAR NOT NULL,
    split            VARCHAR NOT NULL,
    n_pairs          BIGINT,
    loss             DOUBLE,
    reward_accuracy  DOUBLE,
    mean_margin      DOUBLE,
    config           JSON,
    created_at       TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (model_id, dataset, split)
);
CREATE TABLE annotations (
    dataset     VARCHAR NOT NULL,
    pair_id     VARCHAR NOT NULL,
    flag        VARCHAR,
    note        VARCHAR,
    force       VARCHAR,               -- keep | drop | NULL
    updated_at  TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (dataset, pair_id)
);
CREATE TABLE token_logps (
    run_id   VARCHAR NOT NULL,         -- a logp run (policy) whose tokens these are
    ref_run  VARCHAR,                  -- the reference logp run they are compared with
    pair_id  VARCHAR NOT NULL,
    side     VARCHAR NOT NULL,         -- chosen | rejected
    tokens   VARCHAR[],
    logps    DOUBLE[],
    ref_logps DOUBLE[],
    PRIMARY KEY (run_id, pair_id, side)
);
""",
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
