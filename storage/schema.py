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
    (
        2,
        "decisions per annotator with history; annotations becomes the effective decision",
        """
-- Each annotator's current decision on a pair (one row per annotator and pair). `role` is the
-- annotator's role when they saved it (annotator | curator): the effective-decision policy reads it.
CREATE TABLE annotation_decisions (
    dataset     VARCHAR NOT NULL,
    pair_id     VARCHAR NOT NULL,
    annotator   VARCHAR NOT NULL,
    role        VARCHAR NOT NULL DEFAULT 'annotator',
    flag        VARCHAR,
    note        VARCHAR,
    force       VARCHAR,               -- keep | drop | NULL (the rule decides)
    swapped     BOOLEAN NOT NULL DEFAULT false,  -- chosen and rejected are the wrong way round
    updated_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, pair_id, annotator)
);
-- Append-only: every save or withdrawal, with the decision before and after (JSON, NULL = none).
CREATE SEQUENCE annotation_history_seq;
CREATE TABLE annotation_history (
    event_id    BIGINT PRIMARY KEY DEFAULT nextval('annotation_history_seq'),
    dataset     VARCHAR NOT NULL,
    pair_id     VARCHAR NOT NULL,
    annotator   VARCHAR NOT NULL,
    role        VARCHAR NOT NULL,
    saved_at    TIMESTAMP NOT NULL,
    action      VARCHAR NOT NULL,      -- save | withdraw | migrated
    before      JSON,
    after       JSON
);
-- Who did what from the dashboard (selections saved, exports, jobs started), and when.
CREATE TABLE audit_log (
    saved_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    who         VARCHAR NOT NULL,
    role        VARCHAR,
    action      VARCHAR NOT NULL,
    detail      JSON
);
-- The single-row annotations of schema 1 were one anonymous person's, who could do everything:
-- they become a curator's decisions by '(unattributed)', so selections keep forcing the same pairs.
INSERT INTO annotation_decisions (dataset, pair_id, annotator, role, flag, note, force, swapped, updated_at)
SELECT dataset, pair_id, '(unattributed)', 'curator', flag, note, force, false,
       coalesce(updated_at, current_timestamp::TIMESTAMP)
FROM annotations;
INSERT INTO annotation_history (dataset, pair_id, annotator, role, saved_at, action, before, after)
SELECT dataset, pair_id, '(unattributed)', 'curator', coalesce(updated_at, current_timestamp::TIMESTAMP),
       'migrated', NULL, json_object('flag', flag, 'note', note, 'force', force, 'swapped', false)
FROM annotations ORDER BY updated_at, pair_id;
DROP TABLE annotations;
-- THE effective decision per pair (storage/annotations.py documents the policy; selections,
-- exports and every page read it here). A pair's "decision" is (force, swapped). If any curator
-- decided the pair, only curators' decisions count; otherwise every annotator's. When all that
-- count agree, that is the decision (status 'curator', 'agreed', or 'single' for one annotator);
-- when they differ the pair is 'conflict': no forced keep/drop and no swap until it is resolved.
CREATE VIEW annotations AS
WITH d AS (
    SELECT *,
           coalesce(force, 'rule') || CASE WHEN swapped THEN '+swapped' ELSE '' END AS decision,
           bool_or(role = 'curator') OVER (PARTITION BY dataset, pair_id) AS by_curator,
           count(*) OVER (PARTITION BY dataset, pair_id) AS n_all
    FROM annotation_decisions
),
w AS (SELECT * FROM d WHERE role = 'curator' OR NOT by_curator)
SELECT dataset, pair_id,
       CASE WHEN count(DISTINCT decision) = 1 THEN any_value(force) END AS force,
       coalesce(count(DISTINCT decision) = 1 AND bool_and(swapped), false) AS swapped,
       CASE WHEN count(DISTINCT decision) > 1 THEN 'conflict'
            WHEN any_value(by_curator) THEN 'curator'
            WHEN count(*) > 1 THEN 'agreed'
            ELSE 'single' END AS status,
       string_agg(DISTINCT flag, '; ' ORDER BY flag) AS flag,
       CASE WHEN count(note) <= 1 THEN max(note)
            ELSE string_agg(annotator || ': ' || note, ' | ' ORDER BY annotator) END AS note,
       max(updated_at) AS updated_at,
       count(*)::INTEGER AS n_deciding,
       any_value(n_all)::INTEGER AS n_annotators,
       string_agg(annotator, ', ' ORDER BY annotator) AS decided_by
FROM w
GROUP BY dataset, pair_id;
""",
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
